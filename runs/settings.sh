# The long run's names, in one place: sourced by long-run.sh, after-run.sh and autocommit.sh (from the repo root).
# EPOCHS: the student's length; 400 is the run in progress, EPOCHS=200 names the one released on 2026-12-04.
EPOCHS=${EPOCHS:-400}
OUT=runs/edge-w20-kd0-$EPOCHS
# FT: the zoom-out fine-tune after-run.sh makes: the recipe of the released 200-epoch edge (zoom 0.3, lr 0.01, 10 epochs).
FT=$OUT-zoom30-ft10-lr01
TEACHER=runs/teacher-52d923a.tflite
DATA=${CIFAR10_DATA:-$(cd ../shared/data 2>/dev/null && pwd)/cifar10-jpeg.tar.gz}
export CIFAR10_DATA=$DATA TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=1
