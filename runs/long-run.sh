#!/bin/bash
# The long edge student ($EPOCHS epochs, runs/settings.sh) (issues 14/15). Resumes when a checkpoint exists.
cd "$(dirname "$0")/.." || exit 1
. runs/settings.sh
if [ -f "$OUT/checkpoint/state.json" ]; then
  .venv/bin/cifar-train --out "$OUT" --resume --data "$DATA" >> "$OUT.log" 2>&1
else
  .venv/bin/cifar-train --model resnet8-w20 --epochs "$EPOCHS" --holdout 5000 --mixed-precision bfloat16 \
    --teacher "$TEACHER" --distill-shift-step 0 --out "$OUT" --data "$DATA" >> "$OUT.log" 2>&1
fi
echo "exit $? $(date -u +%FT%TZ)" >> "$OUT.log"
