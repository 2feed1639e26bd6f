# The long run's names, in one place: sourced by long-run.sh, after-run.sh and autocommit.sh (from the repo root).
# EPOCHS: the student's length; 400 is the run in progress, EPOCHS=200 names the one released on 2026-12-04.
EPOCHS=${EPOCHS:-400}
# STUDENT: the registry model; resnet8-w20 (the default) names the released runs, any other its own folder.
STUDENT=${STUDENT:-resnet8-w20}
if [ "$STUDENT" = resnet8-w20 ]; then
  OUT=runs/edge-w20-kd0-$EPOCHS BENCH=runs/bench-edge-$EPOCHS SOUP=runs/edge-$EPOCHS-zoom40-soup
else
  OUT=runs/edge-$STUDENT-kd0-$EPOCHS BENCH=runs/bench-$STUDENT-$EPOCHS SOUP=$OUT-zoom40-soup
fi
# FT: the zoom-out fine-tune after-run.sh makes: the recipe of the released 200-epoch edge (zoom 0.3, lr 0.01, 10 epochs).
FT=$OUT-zoom30-ft10-lr01
TEACHER=runs/teacher-52d923a.tflite
# TEACHER's flip-only outputs on the 45,000 training images, made by the 400-epoch run: new runs of the same
# teacher, images and views copy it in, and cifar-train checks that it matches before reusing it.
TEACHER_CACHE=runs/edge-w20-kd0-400/teacher_cache.npz
DATA=${CIFAR10_DATA:-$(cd ../shared/data 2>/dev/null && pwd)/cifar10-jpeg.tar.gz}
export CIFAR10_DATA=$DATA TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=1
