#!/bin/bash
# Scenes on 2,000 test images (500 left the fill deltas ±2 points apart between near-identical models).
cd "$(dirname "$0")/.." || exit 1
. runs/settings.sh
for M in "$@"; do
  echo "== $(date -u +%T) $M" >&2
  .venv/bin/python -m cifar_edge.benchmarks.scenes --model "$M/$STUDENT.tflite-int8.tflite" --limit 2000 --zoom 1 --threads 1 --data "$DATA" > "$M/scenes2000.txt"
done
