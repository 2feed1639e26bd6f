#!/bin/bash
# The 200-epoch edge student (issues 14/15). Resumes when a checkpoint exists.
cd "$(dirname "$0")/.." || exit 1
OUT=runs/edge-w20-kd0-200
DATA=/work/shared/data/cifar10-jpeg.tar.gz
export TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=1
if [ -f "$OUT/checkpoint/state.json" ]; then
  .venv/bin/cifar-train --out "$OUT" --resume --data "$DATA" >> runs/edge-w20-kd0-200.log 2>&1
else
  .venv/bin/cifar-train --model resnet8-w20 --epochs 200 --holdout 5000 --mixed-precision bfloat16 \
    --teacher runs/teacher-52d923a.tflite --distill-shift-step 0 --out "$OUT" --data "$DATA" >> runs/edge-w20-kd0-200.log 2>&1
fi
echo "exit $? $(date -u +%FT%TZ)" >> runs/edge-w20-kd0-200.log
