"""The classification loop shared by `cifar-run` and the runtime benchmark.

It times each stage per frame, so the summary can say where the time goes: capture or
decode, preprocess, and inference (engine plus top-k).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from cifar_edge.runtime.classifier import Classifier, Prediction
from cifar_edge.runtime.sources import Frame, FrameSource


@dataclass
class Result:
    """A frame and what the classifier said about it."""

    frame: Frame
    predictions: list[Prediction] | None
    """None when the frame failed to read, or was skipped by `every`."""
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    answer: Prediction | None = None
    """The best prediction, or `unknown` below the classifier's minimum score."""

    @property
    def latency_ms(self) -> float:
        """Preprocess plus inference: the classifier's share of this frame."""
        return self.preprocess_ms + self.inference_ms


@dataclass
class RunStats:
    """Counts and per-stage times of one run, filled in as it goes (so Ctrl-C keeps them)."""

    unit: str = "frames"
    """What the summary counts: `frames` of a stream, or `images`."""
    frames: int = 0
    """Frames or images read, including skipped and failed ones."""
    classified: int = 0
    errors: int = 0
    read_ms: list[float] = field(default_factory=list)
    preprocess_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        """Classified frames per second of wall time, reading and display included."""
        return self.classified / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        def median(values):
            return round(float(np.median(values)), 3) if values else None

        return {
            "frames": self.frames,
            "classified": self.classified,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "median_ms": {"read": median(self.read_ms), "preprocess": median(self.preprocess_ms), "inference": median(self.inference_ms)},
        }

    def summary_line(self) -> str:
        """`3 of 4 images classified, 1 failed, in 0.05 s; median ms: ...`: FPS for streams only, and no
        rate or stage times when nothing was classified."""
        s = self.summary()
        failed = f", {s['errors']} failed," if s["errors"] else ""
        line = f"{s['classified']} of {s['frames']} {self.unit} classified{failed} in {s['seconds']:.2f} s"
        if not s["classified"]:
            return line
        if self.unit == "frames":
            line += f", {s['fps']:.1f} FPS"
        stages = ", ".join(f"{stage} {value:.2f}" for stage, value in s["median_ms"].items() if value is not None)
        return f"{line}; median ms: {stages}"


def classify_frames(
    classifier: Classifier,
    source: FrameSource,
    *,
    top_k: int = 1,
    every: int = 1,
    max_frames: int | None = None,
    on_result: Callable[[Result], None] | None = None,
    stats: RunStats | None = None,
) -> RunStats:
    """Classify every `every`-th frame of `source`, stopping after `max_frames` read.

    `on_result` sees every frame, skipped ones too (with no predictions), so a display or
    video writer keeps every frame. Pass `stats` to keep the figures if the loop is interrupted.
    """
    stats = stats if stats is not None else RunStats()
    for frame in source:
        stats.frames += 1
        stats.read_ms.append(frame.read_ms)
        result = Result(frame, None)
        if frame.error is not None:
            stats.errors += 1
        elif (stats.frames - 1) % every == 0:
            start = time.perf_counter()
            batch = classifier.preprocess_views(frame.image)
            preprocessed = time.perf_counter()
            predictions = classifier.postprocess_views(classifier.invoke(batch), top_k)
            answer = classifier.answer(predictions)
            done = time.perf_counter()
            result = Result(frame, predictions, (preprocessed - start) * 1000, (done - preprocessed) * 1000, answer)
            stats.classified += 1
            stats.preprocess_ms.append(result.preprocess_ms)
            stats.inference_ms.append(result.inference_ms)
        if on_result is not None:
            on_result(result)
        if max_frames is not None and stats.frames >= max_frames:
            break
    stats.finished = time.perf_counter()
    return stats


def annotate(rgb: np.ndarray, predictions: list[Prediction] | None, fps: float | None, answer: Prediction | None = None) -> np.ndarray:
    """A BGR copy of the frame, ready for OpenCV's window or writer, with label, score and FPS."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    scale = max(0.5, bgr.shape[0] / 480)
    lines = [f"{p.label} {p.score:.2f}" for p in predictions or []]
    if answer is not None and answer.class_id is None:
        lines.insert(0, f"{answer.label}?")
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    for row, text in enumerate(lines):
        origin = (int(10 * scale), int((28 + 30 * row) * scale))
        # A dark outline under the white text keeps it legible on any background.
        cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (0, 0, 0), int(4 * scale), cv2.LINE_AA)
        cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    return bgr
