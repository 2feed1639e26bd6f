#!/bin/bash
# Issue 14's architecture ablation at a shortened length: the long run's recipe (teacher, flip-only cache, holdout)
# for 32 epochs, two students side by side, one TensorFlow thread each. Usage: runs/arch-e32.sh MODEL...
cd "$(dirname "$0")/.." || exit 1
. runs/settings.sh
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
for MODEL in "$@"; do
  RUN=runs/abl-$MODEL-kd0-e32
  mkdir -p "$RUN"
  { [ -f "$RUN/teacher_cache.npz" ] || [ ! -f "$TEACHER_CACHE" ] || cp "$TEACHER_CACHE" "$RUN/"; }
  ( .venv/bin/cifar-train --model "$MODEL" --epochs 32 --holdout 5000 --mixed-precision bfloat16 --teacher "$TEACHER" \
      --distill-shift-step 0 --out "$RUN" --data "$DATA" > "$RUN.log" 2>&1; echo "exit $? $(date -u +%FT%TZ)" >> "$RUN.log" ) &
done
wait
