"""Scenes, not crops: test images placed in 640x480 frames, filling part of the centre square.

A camera rarely frames its subject edge to edge. Each scene puts a CIFAR-10 test image
(upscaled, cubic) at 50, 75 or 100% of the frame's centre square (its height), on a
textured or a noisy background, then JPEG-encodes it as a camera would. Accuracy on
scenes against accuracy on the raw 32x32 images says what framing costs, and what
`cifar-run --zoom` wins back.

    python -m cifar_edge.benchmarks.scenes --model edge --zoom auto --zoom 1 --zoom 1,0.75,0.5 --zoom 1:0.75,0.75:0.25 --limit 500
    python -m cifar_edge.benchmarks.scenes --write samples/scenes --limit 20   # a photo set and a clip per fill
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cifar_edge.runtime.classifier import Classifier
from cifar_edge.runtime.cli import zoom_setting
from cifar_edge.runtime.data import ENV_VAR, Split, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, positive_int, run_cli
from cifar_edge.runtime.files import atomic_path, writable_dir
from cifar_edge.runtime.labels import CLASS_NAMES
from cifar_edge.runtime.preprocess import decode_rgb
from cifar_edge.runtime.zoom import Zoom

FRAME_SIZE = (640, 480)
FILLS = (0.5, 0.75, 1.0)
BACKGROUNDS = ("textured", "noise")
JPEG_QUALITY = 90


def background(kind: str, rng: np.random.Generator, size=FRAME_SIZE) -> np.ndarray:
    """An RGB background: `textured` (smooth colour blobs with stripes, like a room) or `noise` (grey sensor noise)."""
    width, height = size
    if kind == "textured":
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        period = rng.integers(8, 40)
        stripes = 30 * np.sin(2 * np.pi * (np.arange(width) + rng.integers(0, period)) / period)
        image += stripes[None, :, None]
    elif kind == "noise":
        image = rng.normal(rng.integers(60, 200), 45, (height, width, 3))
    else:
        raise ValueError(f"background must be one of {BACKGROUNDS}, not {kind!r}")
    return np.clip(image, 0, 255).astype(np.uint8)


def scene(rgb: np.ndarray, fill: float, kind: str, rng: np.random.Generator, size=FRAME_SIZE) -> np.ndarray:
    """`rgb` upscaled to `fill` of the frame's centre square, centred on a background; RGB, JPEG round-tripped."""
    width, height = size
    frame = background(kind, rng, size)
    side = round(min(width, height) * fill)
    top, left = (height - side) // 2, (width - side) // 2
    frame[top : top + side, left : left + side] = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise CifarEdgeError("OpenCV could not encode a JPEG")
    return decode_rgb(encoded.tobytes())


@dataclass(frozen=True)
class SceneResult:
    setting: str
    """As given to `--zoom` (`auto`, or its fractions and weights)."""
    zoom: Zoom
    """The setting used (under `auto`, the model's)."""
    raw_accuracy: float
    """On the 32x32 images themselves, one view."""
    accuracy: dict[tuple[float, str], float]
    """(fill, background) -> accuracy on the scenes."""
    ms_per_frame: float
    """Median preprocess + inference + postprocess per scene."""
    answered: dict[tuple[float, str], float]
    """(fill, background) -> the share of scenes answered (not `unknown`) at the threshold in use (`min_score` auto)."""
    answered_accuracy: dict[tuple[float, str], float]
    """(fill, background) -> the accuracy of the answered scenes (nan when none is answered)."""


ZoomSetting = Zoom | str
"""`auto`, or a `Zoom`, as `cifar-run --zoom` parses them."""


def evaluate(model: str | None, split: Split, zooms: list[ZoomSetting], seed: int = 0, threads: int | None = 1,
             engine: str = "auto") -> list[SceneResult]:
    """Each zoom setting on every scene of `split` (the same scenes for all), beside the raw images.

    Each scene is made, classified under every setting, and dropped: the whole test split's 60,000 frames
    would need 55 GB held at once."""
    classifiers = [Classifier(model, engine=engine, threads=threads, zoom=setting) for setting in zooms]
    rng = np.random.default_rng(seed)
    keys = [(fill, kind) for fill in FILLS for kind in BACKGROUNDS]
    right = np.zeros((len(classifiers), len(keys), len(split)), bool)
    kept = np.zeros_like(right)
    times: list[list[float]] = [[] for _ in classifiers]
    for k, (fill, kind) in enumerate(keys):
        for i, (rgb, label) in enumerate(zip(split.images, split.labels, strict=True)):
            frame = scene(rgb, fill, kind, rng)
            for c, classifier in enumerate(classifiers):
                started = time.perf_counter()
                best = classifier.classify(frame)[0]
                times[c].append(time.perf_counter() - started)
                right[c, k, i] = best.class_id == label
                kept[c, k, i] = classifier.answer([best]).class_id is not None
    # One model under every setting: the raw images get the same answers whatever the zoom, so they are classified once.
    raw_accuracy = float(np.mean(classifiers[0].engine.predict(split.images).argmax(axis=1) == split.labels)) if classifiers else float("nan")
    results = []
    for c, (setting, classifier) in enumerate(zip(zooms, classifiers, strict=True)):
        accuracy = {key: float(right[c, k].mean()) for k, key in enumerate(keys)}
        answered = {key: float(kept[c, k].mean()) for k, key in enumerate(keys)}
        answered_accuracy = {key: float(right[c, k][kept[c, k]].mean()) if kept[c, k].any() else float("nan")
                             for k, key in enumerate(keys)}
        label = "auto" if setting == "auto" else classifier.zoom.text
        results.append(SceneResult(label, classifier.zoom, raw_accuracy, accuracy,
                                   float(np.median(times[c]) * 1000), answered, answered_accuracy))
    return results


def markdown(results: list[SceneResult]) -> str:
    keys = [(fill, kind) for fill in FILLS for kind in BACKGROUNDS]
    lines = ["| --zoom | raw 32×32 | " + " | ".join(f"{fill:.0%} {kind}" for fill, kind in keys) + " | ms/frame |",
             "|---|---:|" + "---:|" * len(keys) + "---:|"]
    for r in results:
        cells = " | ".join(f"{r.accuracy[key]:.2%} ({(r.accuracy[key] - r.raw_accuracy) * 100:+.1f})" for key in keys)
        lines.append(f"| {_name(r)} | {r.raw_accuracy:.2%} | {cells} | {r.ms_per_frame:.2f} |")
    return "\n".join(lines)


def answered_markdown(results: list[SceneResult]) -> str:
    """Selective prediction on the scenes: the share answered at the default threshold, and their accuracy."""
    keys = [(fill, kind) for fill in FILLS for kind in BACKGROUNDS]
    lines = ["| --zoom | " + " | ".join(f"{fill:.0%} {kind}" for fill, kind in keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in results:
        lines.append(f"| {_name(r)} | " + " | ".join(f"{r.answered[key]:.1%} ({r.answered_accuracy[key]:.1%})" for key in keys) + " |")
    return "\n".join(lines)


def _name(result: SceneResult) -> str:
    resolved = result.zoom.text
    return resolved if result.setting == resolved else f"{result.setting} ({resolved})"


def write_scenes(split: Split, out: Path, seed: int = 0) -> list[Path]:
    """A photo set (fill/background/NNNN-class.jpg) and a 640x480 clip per fill, from `split`."""
    rng = np.random.default_rng(seed)
    out = writable_dir(out)
    written = []
    for fill in FILLS:
        frames = []
        for kind in BACKGROUNDS:
            folder = writable_dir(out / f"fill{round(fill * 100):03d}" / kind)
            for index, (rgb, label) in enumerate(zip(split.images, split.labels, strict=True)):
                bgr = cv2.cvtColor(scene(rgb, fill, kind, rng), cv2.COLOR_RGB2BGR)
                frames.append(bgr)
                path = folder / f"{index:04d}-{CLASS_NAMES[label]}.jpg"
                with atomic_path(path) as temporary:
                    cv2.imwrite(str(temporary), bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                written.append(path)
        clip = out / f"fill{round(fill * 100):03d}.avi"
        with atomic_path(clip) as temporary:
            writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, FRAME_SIZE)
            for bgr in frames:
                writer.write(bgr)
            writer.release()
        written.append(clip)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m cifar_edge.benchmarks.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model file, export folder or packaged name (default: edge)")
    parser.add_argument("--zoom", type=zoom_setting, action="append", metavar="auto|F[:W][,F[:W]...]",
                        help="zoom settings to compare, as cifar-run --zoom takes them (repeatable; default: auto)")
    parser.add_argument("--limit", type=positive_int, default=500, help="class-balanced test images (default: 500)")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--data", help=f"CIFAR-10 source (default: ${ENV_VAR})")
    parser.add_argument("--write", type=Path, metavar="DIR", help="write the photo set and clips here instead of measuring")
    args = parser.parse_args(argv)

    def body() -> int:
        split = load_cifar10(resolve_source(args.data)).test.balanced_subset(args.limit, 0)
        if args.write:
            paths = write_scenes(split, args.write)
            print(f"{len(paths)} files in {args.write}")
            return 0
        results = evaluate(args.model, split, args.zoom or ["auto"], threads=args.threads, engine=args.engine)
        print(markdown(results))
        print("\nAnswered (not unknown) at the threshold in use (--min-score auto), and the accuracy of those answered:\n")
        print(answered_markdown(results))
        return 0

    return run_cli("scenes", body)


if __name__ == "__main__":
    sys.exit(main())
