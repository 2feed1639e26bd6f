# The long run's names, in one place: sourced by long-run.sh, after-run.sh and autocommit.sh (from the repo root).
OUT=runs/edge-w20-kd0-200
FT=runs/edge-w20-kd0-200-zoom50-ft10
TEACHER=runs/teacher-52d923a.tflite
DATA=${CIFAR10_DATA:-$(cd ../shared/data 2>/dev/null && pwd)/cifar10-jpeg.tar.gz}
export CIFAR10_DATA=$DATA TF_NUM_INTRAOP_THREADS=2 TF_NUM_INTEROP_THREADS=1
