"""Knowledge distillation: a teacher's softened probabilities as a second target.

The teacher is any file that keeps the model contract (`.keras`, `.tflite`, `.onnx`),
run through the runtime's engines. Its outputs are computed once per training image and
per view of a `ViewGrid` (each flip, and shifts on a grid), cached in the run folder
(`teacher_cache.npz`) and reused on `--resume`; a cache made by another teacher file is
refused on resume, and rebuilt on a fresh run.

The loss, per image, with student probabilities p, teacher log-probabilities t, one-hot
labels y smoothed by s, weight alpha and temperature T:

    alpha * CE(y_s, p) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(log p / T))

log p serves as the student's logits: softmax(log p) = p, and a constant shift of the
logits changes no softmax, so this is Hinton et al.'s loss. T^2 keeps the soft term's
gradient on the scale of the hard term's as T changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cifar_edge.runtime.calibration import log_probabilities
from cifar_edge.runtime.data import Split
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.files import atomic_path, sha256_file
from cifar_edge.runtime.labels import NUM_CLASSES
from cifar_edge.runtime.machine import usable_cpus
from cifar_edge.train.pipeline import ViewGrid
from cifar_edge.train.settings import CACHE_FILE, TrainError

log = logging.getLogger("cifar_edge.train")

# An int8 teacher quantizes its probabilities (steps of 1/256 in our files), so an exact 0
# says only "below half a step". It becomes this floor rather than log 0 = -inf: low enough
# to be far below any quantum, high enough that softmax(t / T) stays well conditioned.
TEACHER_PROBABILITY_FLOOR = 1e-6
# Images per teacher call while the cache is built: bounds the memory of one view's batch.
_CHUNK = 1024


def teacher_log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    return log_probabilities(probabilities, TEACHER_PROBABILITY_FLOOR).astype(np.float32)


@dataclass(frozen=True)
class TeacherCache:
    """A teacher's log-probabilities for a run's training views and test images."""

    train: np.ndarray
    """(train images, views of `grid`, classes)."""
    test: np.ndarray
    """(test images, classes), the plain view: the targets of the test loss."""
    grid: ViewGrid
    teacher_sha256: str
    train_fingerprint: str
    test_fingerprint: str
    images_per_second: float
    """The teacher's measured speed while the cache was built, in image-views per second."""
    build_seconds: float
    threads: int | None = None
    """The teacher's CPU threads while the cache was built (None: a cache from before this was recorded)."""

    def save(self, path: Path) -> None:
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(
                file, train=self.train, test=self.test, shifts=np.array(self.grid.shifts), flips=np.array(self.grid.flips),
                teacher_sha256=self.teacher_sha256, train_fingerprint=self.train_fingerprint,
                test_fingerprint=self.test_fingerprint, images_per_second=self.images_per_second,
                build_seconds=self.build_seconds, threads=self.threads or 0,
            )

    @classmethod
    def load(cls, path: Path) -> TeacherCache:
        try:
            with np.load(path) as data:
                return cls(
                    train=data["train"], test=data["test"],
                    grid=ViewGrid(tuple(int(s) for s in data["shifts"]), tuple(bool(f) for f in data["flips"])),
                    teacher_sha256=str(data["teacher_sha256"]), train_fingerprint=str(data["train_fingerprint"]),
                    test_fingerprint=str(data["test_fingerprint"]), images_per_second=float(data["images_per_second"]),
                    build_seconds=float(data["build_seconds"]),
                    threads=int(data.get("threads", 0)) or None,
                )
        except (OSError, ValueError, KeyError) as error:
            raise TrainError(f"{path}: unreadable teacher cache ({type(error).__name__}); remove it to rebuild it") from None


def build_cache(teacher: str | Path, train_split: Split, test_split: Split, grid: ViewGrid, teacher_sha256: str) -> TeacherCache:
    """Run `teacher` (whose file has `teacher_sha256`) on every training image through every view of `grid`, and on the test images."""
    # Every core the process may use: LiteRT's default is one thread, and this pass is the
    # 18-view cache's 30-40 minutes on a 2-core machine (1.66x faster on two threads, 2026-12-03).
    threads = usable_cpus()
    engine = open_engine(teacher, threads=threads)
    started = time.perf_counter()

    def run(images: np.ndarray) -> np.ndarray:
        outputs = [_checked(engine.predict(images[i : i + _CHUNK], batch_size=_CHUNK), teacher) for i in range(0, len(images), _CHUNK)]
        return teacher_log_probabilities(np.concatenate(outputs) if outputs else np.zeros((0, NUM_CLASSES)))

    train = np.stack([run(grid.batch(train_split.images, view)) for view in grid.views()], axis=1)
    test = run(test_split.images)
    seconds = time.perf_counter() - started
    evaluated = len(train_split) * len(grid) + len(test_split)
    return TeacherCache(train, test, grid, teacher_sha256, train_split.fingerprint(), test_split.fingerprint(),
                        round(evaluated / seconds, 1), round(seconds, 2), threads)


def _checked(probabilities: np.ndarray, teacher) -> np.ndarray:
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise TrainError(f"--teacher {teacher}: returns shape {probabilities.shape}, not (N, {NUM_CLASSES}) class probabilities")
    if np.any(probabilities < -1e-3) or not np.allclose(probabilities.sum(axis=1), 1.0, atol=0.05):
        raise TrainError(f"--teacher {teacher}: its outputs are not probabilities (each row must be >= 0 and sum to 1)")
    return probabilities


def prepare_teacher(out: Path, teacher: str, grid: ViewGrid, train_split: Split, test_split: Split,
                    resume: bool) -> tuple[TeacherCache, dict]:
    """The run's teacher cache, reused from `out` when it belongs to this teacher and these
    images, and the teacher's description for config.json."""
    path = out / CACHE_FILE
    if not Path(teacher).is_file():
        raise TrainError(f"--teacher {teacher}: no such file")
    teacher_sha = sha256_file(teacher)
    cache = TeacherCache.load(path) if path.is_file() else None
    if cache is not None:
        if cache.teacher_sha256 != teacher_sha:
            if resume:
                raise TrainError(
                    f"--teacher {teacher} changed since this run's teacher cache was made (sha256 {teacher_sha[:12]}, "
                    f"cache {cache.teacher_sha256[:12]}); resuming would mix two teachers: restore the file or start a new run"
                )
            cache = None
        elif (cache.train_fingerprint, cache.test_fingerprint, cache.grid) != (train_split.fingerprint(), test_split.fingerprint(), grid):
            if resume:
                raise TrainError(f"{path}: made for other images or views than this run's; remove it to rebuild it")
            cache = None
        else:
            log.info("teacher outputs: reusing %s", path)
    if cache is None:
        log.info("teacher outputs: %d views of %d training images and %d test images", len(grid), len(train_split), len(test_split))
        cache = build_cache(teacher, train_split, test_split, grid, teacher_sha)
        cache.save(path)
    plain = grid.views().index((0, 0, False))
    info = {
        "path": str(teacher),
        "sha256": teacher_sha,
        "test_accuracy": float(np.mean(np.argmax(cache.test, axis=1) == test_split.labels)),
        "train_accuracy": float(np.mean(np.argmax(cache.train[:, plain], axis=1) == train_split.labels)),
        "views": len(grid),
        "shifts": list(grid.shifts),
        "flips": len(grid.flips),
        "cache": CACHE_FILE,
        "cache_seconds": cache.build_seconds,
        "teacher_images_per_second": cache.images_per_second,
        "teacher_threads": cache.threads,
        # What computing the targets online would cost instead: one teacher pass per
        # training image per epoch, at the speed measured while building the cache.
        "online_seconds_per_epoch": round(len(train_split) / cache.images_per_second, 2),
    }
    return cache, info


def packed_targets(labels_one_hot: np.ndarray, teacher_log_probs: np.ndarray) -> np.ndarray:
    """The distillation loss's y_true: one-hot labels, then teacher log-probabilities."""
    return np.concatenate([labels_one_hot, teacher_log_probs], axis=1).astype(np.float32)


@keras.saving.register_keras_serializable(package="cifar_edge")
class DistillationLoss(keras.losses.Loss):
    """alpha * CE(smoothed labels, p) + (1 - alpha) * T^2 * KL(teacher_T || student_T).

    y_true is `packed_targets`: (N, 2 x classes); y_pred the student's probabilities.
    """

    def __init__(self, alpha: float, temperature: float, label_smoothing: float = 0.0, name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.temperature, self.label_smoothing = float(alpha), float(temperature), float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, "float32")
        labels, teacher = y_true[:, :NUM_CLASSES], y_true[:, NUM_CLASSES:]
        labels = labels * (1 - self.label_smoothing) + self.label_smoothing / NUM_CLASSES
        log_student = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        hard = -ops.sum(labels * log_student, axis=-1)
        temperature = self.temperature
        teacher_log_soft = ops.log_softmax(teacher / temperature, axis=-1)
        student_log_soft = ops.log_softmax(log_student / temperature, axis=-1)
        kl = ops.sum(ops.exp(teacher_log_soft) * (teacher_log_soft - student_log_soft), axis=-1)
        return self.alpha * hard + (1 - self.alpha) * temperature**2 * kl

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "temperature": self.temperature, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="cifar_edge")
def label_accuracy(y_true, y_pred):
    """Accuracy against the labels part of packed targets."""
    return keras.metrics.categorical_accuracy(y_true[:, :NUM_CLASSES], y_pred)
