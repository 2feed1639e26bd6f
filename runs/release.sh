#!/bin/bash
# Package a candidate `edge` and measure the packaged files: runs/release.sh RUN [PHOTOS]
# RUN: the training folder whose export/ is released (its config.json names the held-out images).
# PHOTOS: tools/ood_photos.py's folder, for the OOD table's real photos (optional).
# Run it only once the candidate passes the release rule (it beats the packaged tflite-int8 on the full
# test split, side by side in after-run.sh's cifar-bench). It rewrites runtime/models/edge, models/edge.keras,
# the golden outputs and docs/img/edge-confusion.png; every measurement goes to RUN/release/.
cd "$(dirname "$0")/.." || exit 1
set -e
. runs/settings.sh
RUN=${1:?usage: runs/release.sh RUN [PHOTOS]} PHOTOS=$2
# The packaged files are named after the released run's model (cifar-export names them so).
FILE=runtime/models/edge/$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['model'])" "$RUN/config.json").tflite-int8.tflite
mkdir -p "$RUN/release"
step() { echo "== $(date -u +%T) $*" >&2; "$@"; }
step .venv/bin/python -m cifar_edge.export.package "$RUN/export" --name edge --sources models
# The zoom weights are chosen on held-out training images; the table is sorted best first.
step .venv/bin/python tools/zoom_weights.py --model "$FILE" --limit 2000 --rows 12 --data "$DATA" > "$RUN/release/zoom_weights.txt"
ZOOM=$(awk -F' [|] ' '/^[|] 1/ {sub(/^[|] /, "", $1); print $1; exit}' "$RUN/release/zoom_weights.txt")
step .venv/bin/python -m cifar_edge.export.zoom runtime/models/edge --zoom "$ZOOM" --run "$RUN" --data "$DATA" | tee "$RUN/release/zoom.txt"
step .venv/bin/python tests/golden_outputs.py
step .venv/bin/python -m cifar_edge.benchmarks.scenes --model edge --limit 2000 --threads 1 --zoom auto --zoom 1 --data "$DATA" > "$RUN/release/scenes2000.txt"
step .venv/bin/python -m cifar_edge.benchmarks.per_class edge --data "$DATA" --image docs/img/edge-confusion.png > "$RUN/release/per_class.txt"
step .venv/bin/python -m cifar_edge.benchmarks.ood --model "$FILE" --limit 1000 --per-kind 100 ${PHOTOS:+--photos "$PHOTOS"} --data "$DATA" > "$RUN/release/ood.txt"
step .venv/bin/python -m cifar_edge.benchmarks.ood --model "$FILE" --zoom auto --limit 1000 --per-kind 100 ${PHOTOS:+--photos "$PHOTOS"} --data "$DATA" > "$RUN/release/ood-zoom-auto.txt"
step .venv/bin/python -m cifar_edge.benchmarks.runtime_speed --model "$FILE" --images 1000 --data "$DATA" > "$RUN/release/runtime_speed.txt"
echo "== $(date -u +%T) done: zoom $ZOOM" >&2
