#!/bin/bash
# Commits the long run's state every INTERVAL seconds, so a lost machine costs at most INTERVAL of work:
# during the run, its checkpoint just after an epoch is written; after it, the run folder, the fine-tune's
# folder and the benchmark's results as after-run.sh writes them. Only the named paths are committed.
cd "$(dirname "$0")/.." || exit 1
set -f  # the paths below hold a pathspec pattern, not a glob
. runs/settings.sh
INTERVAL=${INTERVAL:-1800}
LOG=runs/autocommit.log
while true; do
  sleep "$INTERVAL"
  if [ -f "$OUT/checkpoint/state.json" ]; then
    before=$(stat -c %Y "$OUT/checkpoint/state.json")
    # Wait for the next epoch's state.json (at most 10 min), then commit right after it.
    for _ in $(seq 120); do
      sleep 5
      now=$(stat -c %Y "$OUT/checkpoint/state.json" 2>/dev/null || echo "$before")
      [ "$now" != "$before" ] && break
    done
    sleep 3
  fi
  if [ -f "$OUT/checkpoint/state.json" ]; then
    what="checkpoint at epoch $(python3 -c "import json;print(json.load(open('$OUT/checkpoint/state.json'))['epoch'])") of $EPOCHS"
  else
    what="run ended; after-run outputs so far"
  fi
  paths="$OUT $TEACHER runs/settings.sh runs/long-run.sh runs/after-run.sh runs/autocommit.sh runs/ft.sh runs/scenes2000.sh :(exclude)**/teacher_cache.npz"
  for p in "$FT" "$BENCH"; do [ -e "$p" ] && paths="$paths $p"; done
  for try in 1 2 3 4 5; do
    if git add -f -A $paths >> $LOG 2>&1; then
      if git diff --cached --quiet -- $paths; then echo "$(date -u +%T) nothing new" >> $LOG; break; fi
      if git commit -q -m "Long run: the edge student's $what (resume with runs/long-run.sh)" -- $paths >> $LOG 2>&1; then
        echo "$(date -u +%T) committed: $what $(git rev-parse --short HEAD)" >> $LOG
        break
      fi
    fi
    echo "$(date -u +%T) try $try failed" >> $LOG
    sleep 7
  done
done
