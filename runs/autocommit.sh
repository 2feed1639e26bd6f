#!/bin/bash
# Commits the long run's checkpoint every INTERVAL seconds, just after an epoch is written,
# so a lost machine costs at most INTERVAL of training. Only the named paths are committed.
cd "$(dirname "$0")/.." || exit 1
. runs/settings.sh
INTERVAL=${INTERVAL:-1800}
LOG=runs/autocommit.log
while true; do
  sleep "$INTERVAL"
  [ -f "$OUT/checkpoint/state.json" ] || { echo "$(date -u +%T) no state.json" >> $LOG; continue; }
  before=$(stat -c %Y "$OUT/checkpoint/state.json")
  # Wait for the next epoch's state.json (at most 10 min), then commit right after it.
  for _ in $(seq 120); do
    sleep 5
    now=$(stat -c %Y "$OUT/checkpoint/state.json" 2>/dev/null || echo "$before")
    [ "$now" != "$before" ] && break
  done
  sleep 3
  epoch=$(python3 -c "import json;print(json.load(open('$OUT/checkpoint/state.json'))['epoch'])")
  paths="$OUT/checkpoint $TEACHER runs/settings.sh runs/long-run.sh runs/after-run.sh runs/autocommit.sh"
  for try in 1 2 3 4 5; do
    if git add -f -A $paths >> $LOG 2>&1 && git commit -q -m "Long run: the edge student's checkpoint at epoch $epoch of 200 (resume with runs/long-run.sh)" -- $paths >> $LOG 2>&1; then
      echo "$(date -u +%T) committed epoch $epoch $(git rev-parse --short HEAD)" >> $LOG
      break
    fi
    echo "$(date -u +%T) try $try failed" >> $LOG
    sleep 7
  done
done
