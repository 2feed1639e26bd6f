#!/bin/bash
# A gentler zoom-out fine-tune of the 200-epoch run (after-run.sh's lr 0.03 / 50% cost 1.5 pp int8):
# lr 0.01 and 30% zoomed images. The teacher cache of the first fine-tune (same teacher, images, views) is reused.
cd "$(dirname "$0")/.." || exit 1
set -e
. runs/settings.sh
FT2=runs/edge-w20-kd0-200-zoom30-ft10-lr01
step() { echo "== $(date -u +%T) $*" >&2; "$@"; }
mkdir -p "$FT2" && [ -f "$FT2/teacher_cache.npz" ] || cp "$FT/teacher_cache.npz" "$FT2/"
[ -f "$FT2/model.keras" ] || step .venv/bin/cifar-train --model resnet8-w20 --init-from "$OUT/model.keras" --holdout 5000 --zoom-out 0.3 \
  --teacher "$TEACHER" --distill-shift-step 0 --epochs 10 --learning-rate 0.01 --mixed-precision bfloat16 --out "$FT2" --data "$DATA"
[ -d "$FT2/export" ] || step .venv/bin/cifar-export "$FT2/model.keras" --int8 --out "$FT2/export" --data "$DATA"
step .venv/bin/python -m cifar_edge.benchmarks.scenes --model "$FT2/export/resnet8-w20.tflite-int8.tflite" --limit 500 --zoom 1 --threads 1 --data "$DATA" > "$FT2/scenes.txt"
step .venv/bin/python -m cifar_edge.benchmarks.ood --model "$FT2/export/resnet8-w20.tflite-int8.tflite" --limit 1000 --per-kind 100 --data "$DATA" > "$FT2/ood.txt"
echo "== $(date -u +%T) done"
