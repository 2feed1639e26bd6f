#!/usr/bin/env bash
# make pi-check: prove the Raspberry Pi path on an emulated arm64 Debian (Pi OS 12 is bookworm).
#
# From nothing, on an x86-64 Debian or Ubuntu machine with root, this:
#   1. installs debootstrap and qemu-user-static >= 8.2 from the package managers, and registers qemu with binfmt_misc;
#   2. builds an arm64 Debian root (PI_RELEASE=bookworm|trixie), cached and reused while its key matches;
#   3. installs ".[runtime]" from the working tree into a fresh venv inside the root, as a Pi user would;
#   4. checks that no TensorFlow, Keras, tflite-runtime or torch came with it;
#   5. runs cifar-run (--info, samples/images, samples/clip.mp4) on both packaged models and both engines, in the
#      root and on the host, and compares them with tools/pi_compare.py (identical top-1, probabilities within a tolerance);
#   6. runs cifar-bench with a small --limit in the root, labelled emulated, and merges it with the host's run
#      through `cifar-bench report`;
#   7. prints one PASS or FAIL line and exits non-zero on failure.
#
# Settings (environment):
#   PI_RELEASE   bookworm (default, Pi OS 12, Python 3.11) or trixie (Python 3.13)
#   PI_CPU       the emulated core: cortex-a72 (Pi 4, default) or cortex-a76 (Pi 5)
#   PI_MIRROR    a Debian mirror; default: the one the host's apt uses (never hard-coded)
#   PI_CACHE     where roots are kept; default: $CIFAR_EDGE_CACHE, else $XDG_CACHE_HOME/cifar-edge, else ~/.cache/cifar-edge
#   PI_OUT       where outputs go; default: runs/pi-check/$PI_RELEASE
#   PI_LIMIT     cifar-bench --limit (default 20: accurate's six views take about 1.5 s per image emulated)
#   PI_HOST_BIN  the host's venv bin folder with cifar-run and cifar-bench (default .venv/bin)
#   PI_TOLERANCE, PI_VIDEO_TOLERANCE  the largest probability differences allowed between host and emulated runs on
#                photos and on video frames (default: tools/pi_compare.py's, which says why they are not zero)
set -euo pipefail

started=$(date +%s)
cd "$(dirname "$0")/.."
repo=$(pwd)

release=${PI_RELEASE:-bookworm}
cpu=${PI_CPU:-cortex-a72}
limit=${PI_LIMIT:-20}
host_bin=${PI_HOST_BIN:-$repo/.venv/bin}
cache=${PI_CACHE:-${CIFAR_EDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cifar-edge}}/pi-root
out=${PI_OUT:-$repo/runs/pi-check/$release}
# Packages the root needs beyond minbase; part of the cache key.
include="python3,python3-venv,ca-certificates"
# Bump when the way a root is built changes, so old cached roots are rebuilt.
root_recipe=1
root="$cache/$release-arm64"
mounted=()

fail() { echo "pi-check: FAIL $release arm64: $*" >&2; exit 1; }
missing() { echo "pi-check: $*" >&2; exit 2; }
log() { echo "pi-check: $*" >&2; }

# Retry once: package mirrors and PyPI fail transiently; a second failure is real and fails loudly.
retry() {
    if "$@"; then return 0; fi
    log "retrying once after a failure: $*"
    sleep 5
    "$@"
}

unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || log "could not unmount ${mounted[i]}"
    done
    mounted=()
}
trap unmount_all EXIT
# A signal must still unmount: without these, bash killed while waiting on chroot leaves /dev bound in the root.
trap 'exit 130' INT
trap 'exit 143' TERM

# Mounts that a run killed with SIGKILL left under a folder: unmounted deepest first.
unmount_stale() {
    local target
    target=$(realpath -m "$1")
    awk -v t="$target" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r point; do
        log "unmounting $point, left by an earlier run"
        umount "$point" || umount -l "$point"
    done
}

# Refuse to delete a folder with anything mounted under it: a bound /dev would be emptied on the host.
safe_rm() {
    local target
    target=$(realpath -m "$1")
    if awk -v t="$target" '$2 == t || index($2, t "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        fail "$target still has mounts under it; unmount them (grep '$target' /proc/mounts) and rerun"
    fi
    rm -rf "$target"
}

# --- 0. preconditions -------------------------------------------------------------------------------------------
case "$release" in bookworm | trixie) ;; *) missing "PI_RELEASE=$release is not supported: use bookworm or trixie" ;; esac
[ "$(uname -m)" = x86_64 ] || missing "needs an x86-64 host; this one is $(uname -m)"
[ "$(id -u)" = 0 ] || missing "needs root (apt-get, debootstrap, mount and chroot): run 'sudo make pi-check'"
command -v apt-get >/dev/null || missing "needs a Debian or Ubuntu host with apt-get"
[ -x "$host_bin/cifar-run" ] || missing "no host install at $host_bin: run 'make setup' first, or set PI_HOST_BIN"

# --- 1. tools from the package managers --------------------------------------------------------------------------
host_codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

# The Debian mirror the host's apt uses: deb822 .sources first, then one-line sources.list entries.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v want="$host_codename" '
            /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) ok = 1 }
            /^$/ { if (ok && uri ~ /debian\/?$/) { print uri; exit } ok = 0 }
            END { if (ok && uri ~ /debian\/?$/) print uri }' "$f"
    done
    if [ -f /etc/apt/sources.list ]; then
        awk -v want="$host_codename" '$1 == "deb" && $3 == want && $2 ~ /debian\/?$/ { print $2 }' /etc/apt/sources.list
    fi
}
mirror=${PI_MIRROR:-$(host_mirror | head -n 1)}
[ -n "$mirror" ] || missing "no Debian mirror in the host's apt sources (an Ubuntu host has none): set PI_MIRROR=http://<a Debian mirror>/debian"

qemu_ok() {
    command -v qemu-aarch64-static >/dev/null || return 1
    local v
    v=$(qemu-aarch64-static --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n 1)
    # qemu < 8.2 shows arm64 programs the host's /proc/cpuinfo, and `import onnxruntime` then segfaults.
    [ -n "$v" ] && set -- $v && { [ "$1" -gt 8 ] || { [ "$1" -eq 8 ] && [ "$2" -ge 2 ]; }; }
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then retry apt-get update -qq || fail "apt-get update failed"; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive retry apt-get install -y -qq "$@" >/dev/null || fail "apt-get install $* failed"
}

command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
if ! qemu_ok; then
    log "installing qemu-user-static"
    apt_install qemu-user-static
fi
if ! qemu_ok && [ "$host_codename" = bookworm ]; then
    # Bookworm's own qemu-user is 7.2; bookworm-backports carries 10.x.
    log "qemu-user-static is older than 8.2; installing it from bookworm-backports ($mirror)"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" >/etc/apt/sources.list.d/cifar-edge-pi-check-backports.sources
    apt_updated=0
    apt_install -t bookworm-backports qemu-user-static
fi
qemu_ok || missing "needs qemu-user-static >= 8.2 (found: $(qemu-aarch64-static --version 2>/dev/null | head -n 1 || echo none)): install a newer one (Debian: bookworm-backports or trixie; Ubuntu: 24.04 or newer)"
qemu_version=$(qemu-aarch64-static --version | head -n 1 | sed 's/ (.*//')

# --- binfmt_misc: without systemd nobody registers qemu, so do what systemd-binfmt would. ---
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
        || missing "binfmt_misc is not available: run 'modprobe binfmt_misc' on the host (in a container: run it privileged)"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || missing "qemu-user-static installed no $conf to register with binfmt_misc"
    cat "$conf" >"$binfmt/register" 2>/dev/null || missing "could not register qemu-aarch64 with binfmt_misc (needs a privileged host)"
fi
grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
    || missing "qemu-aarch64 is registered with binfmt_misc without the F flag, so it cannot run inside a chroot: re-register it from /usr/lib/binfmt.d/qemu-aarch64.conf"

# --- 2. the arm64 root, cached ----------------------------------------------------------------------------------
host_cas=$(cat /usr/local/share/ca-certificates/* 2>/dev/null | sha256sum | cut -c1-16)
key="recipe=$root_recipe release=$release mirror=$mirror include=$include host-cas=$host_cas"
emulate() { env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$cpu" chroot "$@"; }

root_valid() {
    [ -f "$root/.pi-check-key" ] && [ "$(cat "$root/.pi-check-key")" = "$key" ] && emulate "$root" /usr/bin/python3 -c 'import venv' 2>/dev/null
}

build_root() {
    local tmp="$root.tmp"
    safe_rm "$tmp"
    mkdir -p "$cache"
    log "building the $release arm64 root from $mirror (several minutes)"
    debootstrap --arch=arm64 --variant=minbase --include="$include" "$release" "$tmp" "$mirror" >"$cache/debootstrap-$release.log" 2>&1 || {
        tail -n 5 "$cache/debootstrap-$release.log" >&2
        return 1
    }
    # pip inside the root must trust what the host trusts (a proxy's CA, say).
    if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
        cp /usr/local/share/ca-certificates/* "$tmp/usr/local/share/ca-certificates/"
        emulate "$tmp" update-ca-certificates >/dev/null 2>&1 || return 1
    fi
    echo "$key" >"$tmp/.pi-check-key"
    safe_rm "$root"
    mv "$tmp" "$root"
}

unmount_stale "$root"
unmount_stale "$root.tmp"
root_state="cached"
if ! root_valid; then
    root_state="built"
    retry build_root || fail "debootstrap of $release arm64 failed twice; see $cache/debootstrap-$release.log"
fi

bind() {
    mkdir -p "$root$2"
    mount "${@:3}" "$1" "$root$2"
    mounted+=("$root$2")
}
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
bind /sys /sys --bind -o ro
bind /dev /dev --bind
if [ -n "${CIFAR10_DATA:-}" ] && [ -f "$CIFAR10_DATA" ]; then
    data_dir=$(cd "$(dirname "$CIFAR10_DATA")" && pwd)
    bind "$data_dir" /opt/cifar-edge/data --bind -o ro
    pi_data=/opt/cifar-edge/data/$(basename "$CIFAR10_DATA")
else
    pi_data=""
fi

# --- 3. the runtime install, as a Pi user would do it -----------------------------------------------------------
log "installing .[runtime] from the working tree into a fresh venv in the root"
# Not named "src": setuptools has been seen to fail building a wheel from a folder of that name.
src=/opt/cifar-edge/tree
safe_rm "$root$src"
safe_rm "$root/opt/cifar-edge/venv"
mkdir -p "$root$src"
# Tracked and untracked-but-not-ignored files: the working tree as it is, without .venv, runs/ or caches.
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$root$src"
in_root() { emulate "$root" /bin/sh -c "cd $src && $1"; }
install_runtime() { in_root "python3 -m venv /opt/cifar-edge/venv && /opt/cifar-edge/venv/bin/pip install --quiet --disable-pip-version-check '.[runtime]'"; }
retry install_runtime || fail "pip install '.[runtime]' failed twice in the root"
python_version=$(in_root "/opt/cifar-edge/venv/bin/python -c 'import platform; print(platform.python_version())'")

# --- 4. nothing heavy came with it -------------------------------------------------------------------------------
heavy=$(in_root "/opt/cifar-edge/venv/bin/pip list --format=freeze" | grep -iE '^(tensorflow[a-z_-]*|tf-nightly|keras|tflite[-_]runtime|torch[a-z_-]*|jax|jaxlib)==' || true)
[ -z "$heavy" ] || fail "the runtime install pulled in: $(echo "$heavy" | tr '\n' ' ')"

# --- 5. the same commands in the root and on the host -----------------------------------------------------------
safe_rm "$out"
mkdir -p "$out/host" "$out/pi"
commands=()
for model in edge accurate; do
    for engine in litert onnxruntime; do
        commands+=("$model-$engine-info|--model $model --engine $engine --info --json")
        commands+=("$model-$engine-images|--model $model --engine $engine samples/images --json --top-k 10")
        commands+=("$model-$engine-video|--model $model --engine $engine --video samples/clip.mp4 --json --top-k 10")
    done
done
log "running ${#commands[@]} cifar-run commands in the root and on the host"
for entry in "${commands[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    # shellcheck disable=SC2086 # args are our own words, split on purpose
    "$host_bin/cifar-run" $args >"$out/host/$name.json" 2>"$out/host/$name.err" || fail "host: cifar-run $args failed: $(tail -n 1 "$out/host/$name.err")"
    in_root "/opt/cifar-edge/venv/bin/cifar-run $args" >"$out/pi/$name.json" 2>"$out/pi/$name.err" \
        || fail "emulated: cifar-run $args failed: $(tail -n 1 "$out/pi/$name.err")"
done
compare=$(python3 tools/pi_compare.py "$out/host" "$out/pi" ${PI_TOLERANCE:+--tolerance "$PI_TOLERANCE"} \
    ${PI_VIDEO_TOLERANCE:+--video-tolerance "$PI_VIDEO_TOLERANCE"}) || fail "$compare"

# --- 6. cifar-bench, labelled emulated, merged with the host's run ----------------------------------------------
label="emulated arm64 $cpu (qemu, not Pi timings)"
# Batch 1 only, and the shortest timing: at batch 32, accurate's minimum of 10 timed runs alone takes 8 minutes emulated.
bench_args="runtime/models/edge runtime/models/accurate --limit $limit --batch-sizes 1 --min-time 0.2 --warmup 1"
if [ -n "$pi_data" ]; then pi_bench_data="--data $pi_data"; else pi_bench_data=""; fi
log "cifar-bench --limit $limit in the root and on the host"
in_root "/opt/cifar-edge/venv/bin/cifar-bench $bench_args $pi_bench_data --out /opt/cifar-edge/bench '--device-name=$label'" \
    >"$out/bench-pi.log" 2>&1 || fail "emulated cifar-bench failed: $(tail -n 1 "$out/bench-pi.log")"
cp -r "$root/opt/cifar-edge/bench" "$out/bench-pi"
# shellcheck disable=SC2086
"$host_bin/cifar-bench" $bench_args --out "$out/bench-host" >"$out/bench-host.log" 2>&1 || fail "host cifar-bench failed: $(tail -n 1 "$out/bench-host.log")"
"$host_bin/cifar-bench" report "$out/bench-host" "$out/bench-pi" --out "$out/bench-merged" >"$out/bench-report.log" 2>&1 \
    || fail "cifar-bench report failed: $(tail -n 1 "$out/bench-report.log")"

# --- 7. one line --------------------------------------------------------------------------------------------------
seconds=$(($(date +%s) - started))
echo "pi-check: PASS $release arm64 (Python $python_version, $qemu_version, $cpu, root $root_state): $compare;" \
    "no TensorFlow, Keras, tflite-runtime or torch; emulated bench merged in $out/bench-merged; $((seconds / 60))m$((seconds % 60))s"
