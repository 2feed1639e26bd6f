#!/bin/bash
# After the long run ends: export it, fine-tune it with zoom-out (issue 15's scenes), export that,
# and measure both beside the packaged edge. Every step's output stays in runs/; nothing is released here.
cd "$(dirname "$0")/.." || exit 1
set -e
. runs/settings.sh
RUN=$OUT
step() { echo "== $(date -u +%T) $*" >&2; "$@"; }
[ -f "$RUN/model.keras" ] || { echo "$RUN/model.keras: the run has not ended"; exit 1; }
[ -d "$RUN/export" ] || step .venv/bin/cifar-export "$RUN/model.keras" --int8 --out "$RUN/export" --data "$DATA"
mkdir -p "$FT" && [ -f "$FT/teacher_cache.npz" ] || cp "$OUT/teacher_cache.npz" "$FT/"  # same teacher, images and views
[ -f "$FT/model.keras" ] || step .venv/bin/cifar-train --model "$STUDENT" --init-from "$RUN/model.keras" --holdout 5000 --zoom-out 0.3 \
  --teacher "$TEACHER" --distill-shift-step 0 --epochs 10 --learning-rate 0.01 --mixed-precision "${PRECISION:-bfloat16}" --out "$FT" --data "$DATA"
[ -d "$FT/export" ] || step .venv/bin/cifar-export "$FT/model.keras" --int8 --out "$FT/export" --data "$DATA"
rm -rf runs/packaged-edge && cp -r runtime/models/edge runs/packaged-edge
step .venv/bin/cifar-bench "$RUN/export" "$FT/export" runs/packaged-edge --out "$BENCH" --threads 1 --engines litert onnxruntime --data "$DATA"
# Scenes on 2,000 images decide between candidates (500 proved too noisy); OOD and the rest: runs/release.sh, once released.
step runs/scenes2000.sh "$FT/export" "$RUN/export"
echo "== $(date -u +%T) done"
