#!/bin/bash
# The long edge student ($EPOCHS epochs, runs/settings.sh) (issues 14/15). Resumes when a checkpoint exists.
cd "$(dirname "$0")/.." || exit 1
. runs/settings.sh
if [ -f "$OUT/checkpoint/state.json" ]; then
  # PRECISION=off on a CPU without native bfloat16 (cifar-train says so when it starts): emulated, it is 4x slower.
  .venv/bin/cifar-train --out "$OUT" --resume --data "$DATA" ${PRECISION:+--mixed-precision "$PRECISION"} >> "$OUT.log" 2>&1
else
  mkdir -p "$OUT" && { [ -f "$OUT/teacher_cache.npz" ] || [ ! -f "$TEACHER_CACHE" ] || cp "$TEACHER_CACHE" "$OUT/"; }
  .venv/bin/cifar-train --model "$STUDENT" --epochs "$EPOCHS" --holdout 5000 --mixed-precision bfloat16 \
    --teacher "$TEACHER" --distill-shift-step 0 --out "$OUT" --data "$DATA" >> "$OUT.log" 2>&1
fi
echo "exit $? $(date -u +%FT%TZ)" >> "$OUT.log"
