"""CIFAR-10 from any source, as uint8 RGB arrays. numpy and OpenCV only, so it runs on a Pi.

Sources, chosen by `resolve_source`: `--data PATH`, else `$CIFAR10_DATA`, else the official
download. A path may be

- the official python tarball (`cifar-10-python.tar.gz`) or its extracted
  `cifar-10-batches-py/` folder, parsed with a restricted unpickler that builds numpy arrays
  and nothing else, so a hostile file is refused rather than run;
- an image-folder tree `ROOT/{train,test}/<class>/*.{png,jpg,jpeg,bmp,webp}`, or a `.tar` /
  `.tar.gz` of one. Archives are read member by member in memory, and any member that is a
  link, a device, absolute or climbs out with `..` makes the whole archive refused.

The first load of a source decodes it into `CACHE/decoded/<fingerprint>.npz`; later loads
read that file, well under a second for all 60,000 images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

# The in-memory dataset and the official batches live in their own modules; their names are
# imported here too, where callers have always found them.
from cifar_edge.runtime.batches import _BATCH_FILES, _from_python_batches
from cifar_edge.runtime.dataset import Cifar10, DataError, Split, balanced_indices  # noqa: F401
from cifar_edge.runtime.files import atomic_path
from cifar_edge.runtime.labels import CLASS_NAMES, IMAGE_SIZE
from cifar_edge.runtime.preprocess import IMAGE_SUFFIXES, decode_rgb, fit_square

log = logging.getLogger("cifar_edge.data")

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: The checksum published beside the official tarball.
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ENV_VAR = "CIFAR10_DATA"
CACHE_ENV_VAR = "CIFAR_EDGE_CACHE"
SPLITS = ("train", "test")
BAD_IMAGE_POLICIES = ("error", "skip")

# Bumped whenever the decoded layout changes, so stale caches are never read.
_CACHE_FORMAT = "1"


def resolve_source(data: str | os.PathLike | None) -> str | None:
    """`--data` if given, else `$CIFAR10_DATA`, else None (meaning: download)."""
    if data is not None and str(data) != "":
        return str(data)
    return os.environ.get(ENV_VAR) or None


def default_cache_dir() -> Path:
    """`$CIFAR_EDGE_CACHE`, else `$XDG_CACHE_HOME/cifar-edge`, else `~/.cache/cifar-edge`."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cifar-edge"


def load_cifar10(
    source: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    bad_images: str = "error",
    url: str = OFFICIAL_URL,
    md5: str = OFFICIAL_MD5,
) -> Cifar10:
    """Load CIFAR-10 from `source` (see the module docstring), decoding once and caching.

    `bad_images="skip"` drops images that cannot be decoded (listed in `Cifar10.skipped`);
    `"error"` refuses the source, naming how many and which.
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, not {bad_images!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if source is None:
        path = download_official(cache, url=url, md5=md5)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if not (path.is_file() or path.is_dir()):
            # A device or FIFO would block the archive probe forever.
            raise DataError(f"{path}: not a regular file or folder")
    path = path.resolve()

    cached = cache / "decoded" / f"{_fingerprint(path)}.npz"
    dataset = _read_decoded(cached, str(path)) if cached.exists() else None
    if dataset is None:
        started = time.perf_counter()
        dataset = _decode(path)
        try:
            _write_decoded(cached, dataset)
            log.info("decoded %s in %.1f s; later loads read %s", path, time.perf_counter() - started, cached)
        except OSError as error:
            # The cache only saves time: without it every load decodes again.
            log.warning("could not write the decoded cache %s (%s)", cached, error.strerror or error)
    if dataset.skipped:
        shown = ", ".join(dataset.skipped[:10])
        more = f" and {len(dataset.skipped) - 10} more" if len(dataset.skipped) > 10 else ""
        message = f"{path}: {len(dataset.skipped)} unreadable images: {shown}{more}"
        if bad_images == "error":
            raise DataError(f"{message}; fix or remove them, or skip them with --bad-images skip")
        log.warning("skipped %s", message)
    return dataset


# --- the download --------------------------------------------------------------------


def download_official(cache_dir: Path, *, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5) -> Path:
    """Download the official python tarball into `cache_dir`, verified and written atomically."""
    target = cache_dir / "cifar-10-python.tar.gz"
    if target.exists() and _md5(target) == md5:
        return target
    _make_dir(cache_dir)
    log.info("downloading %s", url)
    digest = hashlib.md5()
    with atomic_path(target) as temporary:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, temporary.open("wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise DataError(
                f"could not download CIFAR-10 from {url} ({reason}); "
                f"give a local copy with --data PATH or {ENV_VAR}"
            ) from None
        if digest.hexdigest() != md5:
            raise DataError(
                f"{url}: checksum mismatch: expected md5 {md5}, got {digest.hexdigest()}; "
                "the download was discarded"
            )
    return target


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- the decoded cache ---------------------------------------------------------------


def _fingerprint(path: Path) -> str:
    """Identify a source by its path and the size and mtime of what it holds."""
    # The suffixes decide which files of a tree are read, so a change to them is a new source.
    parts = [_CACHE_FORMAT, ",".join(IMAGE_SUFFIXES), str(path)]
    if path.is_file():
        stat = path.stat()
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    else:
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                stat = os.stat(os.path.join(root, name))
                parts.append(f"{os.path.join(root, name)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _read_decoded(cached: Path, source: str) -> Cifar10 | None:
    try:
        with np.load(cached, allow_pickle=False) as arrays:
            return Cifar10(
                train=Split(arrays["train_images"], arrays["train_labels"]),
                test=Split(arrays["test_images"], arrays["test_labels"]),
                class_names=tuple(str(name) for name in arrays["class_names"]),
                source=source,
                skipped=tuple(str(name) for name in arrays["skipped"]),
            )
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
        # A cache is only a copy: a damaged one is rebuilt from the source.
        log.warning("ignoring damaged cache %s (%s)", cached, error)
        return None


def _write_decoded(cached: Path, dataset: Cifar10) -> None:
    _make_dir(cached.parent)
    with atomic_path(cached) as temporary:
        np.savez(
            temporary,
            train_images=dataset.train.images,
            train_labels=dataset.train.labels,
            test_images=dataset.test.images,
            test_labels=dataset.test.labels,
            class_names=np.array(dataset.class_names),
            skipped=np.array(dataset.skipped, dtype=str),
        )


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{path}: cannot create cache folder ({error.strerror}); set {CACHE_ENV_VAR}") from None


# --- decoding a source ---------------------------------------------------------------

_LAYOUT_HELP = (
    "expected the official cifar-10-batches-py files (data_batch_1..5, test_batch) "
    "or train/ and test/ folders with one subfolder per class"
)


def _decode(path: Path) -> Cifar10:
    if path.is_dir():
        for folder in (path, path / "cifar-10-batches-py"):
            if all((folder / name).is_file() for name in _BATCH_FILES):
                return _from_python_batches(
                    {name: (folder / name).read_bytes() for name in _BATCH_FILES}, str(path)
                )
        if all((path / split).is_dir() for split in SPLITS):
            return _from_image_files(_walk_image_tree(path), str(path))
        raise DataError(f"{path}: unrecognised layout; {_LAYOUT_HELP}")
    if not tarfile.is_tarfile(path):
        raise DataError(f"{path}: not a folder or a tar archive of CIFAR-10 data; {_LAYOUT_HELP}")
    return _decode_archive(path)


def _decode_archive(path: Path) -> Cifar10:
    batches: dict[str, bytes] = {}
    images: list[tuple[str, str, str, bytes]] = []  # (split, class, relative path, bytes)
    try:
        # Streaming mode reads a .tar.gz once, front to back, instead of seeking in it.
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                _check_member(path, member)
                if not member.isfile():
                    continue
                parts = PurePosixPath(member.name).parts
                if parts[-1] in _BATCH_FILES:
                    batches[parts[-1]] = archive.extractfile(member).read()
                elif len(parts) >= 3 and parts[-3] in SPLITS and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    data = archive.extractfile(member).read()
                    images.append((parts[-3], parts[-2], "/".join(parts[-3:]), data))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path}: damaged archive ({error})") from None
    if all(name in batches for name in _BATCH_FILES):
        return _from_python_batches(batches, str(path))
    if images:
        return _from_image_files(iter(images), str(path))
    raise DataError(f"{path}: unrecognised archive layout; {_LAYOUT_HELP}")


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse the archive if any member could write outside a folder it were extracted to."""
    name = member.name
    pure = PurePosixPath(name)
    # `tar -C ROOT .` archives start with a "." member, whose parts are empty.
    drive_like = bool(pure.parts) and ":" in pure.parts[0]
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts or drive_like:
        raise DataError(f"{archive}: refused: member {name!r} escapes the archive's folder")
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise DataError(f"{archive}: refused: member {name!r} is a {kind}")


def _walk_image_tree(root: Path) -> Iterator[tuple[str, str, str, bytes]]:
    for split in SPLITS:
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for file in sorted(class_dir.iterdir()):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, class_dir.name, f"{split}/{class_dir.name}/{file.name}", file.read_bytes()


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode encoded image bytes to a 32x32 RGB uint8 array, or None if unreadable."""
    rgb = decode_rgb(data)
    return None if rgb is None else fit_square(rgb, IMAGE_SIZE)


def _from_image_files(files: Iterator[tuple[str, str, str, bytes]], source: str) -> Cifar10:
    decoded: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {split: {} for split in SPLITS}
    skipped: list[str] = []
    for split, class_name, relative, data in files:
        image = decode_image(data)
        if image is None:
            skipped.append(relative)
            decoded[split].setdefault(class_name, [])
        else:
            decoded[split].setdefault(class_name, []).append((relative, image))
    splits = {}
    for split in SPLITS:
        found = set(decoded[split])
        if found != set(CLASS_NAMES):
            missing = ", ".join(sorted(set(CLASS_NAMES) - found)) or "none"
            unexpected = ", ".join(sorted(found - set(CLASS_NAMES))) or "none"
            raise DataError(
                f"{source}: class folders in {split}/ must be the 10 CIFAR-10 classes "
                f"(missing: {missing}; unexpected: {unexpected})"
            )
        images, labels = [], []
        for class_id, class_name in enumerate(CLASS_NAMES):
            for _, image in sorted(decoded[split][class_name], key=lambda item: item[0]):
                images.append(image)
                labels.append(class_id)
        if not images:
            raise DataError(f"{source}: {split}/ holds no readable images")
        splits[split] = Split(np.stack(images), np.array(labels, dtype=np.uint8))
    return Cifar10(splits["train"], splits["test"], CLASS_NAMES, source, tuple(sorted(skipped)))
