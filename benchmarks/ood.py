"""Inputs that are none of the ten classes: how often a model says `unknown` to them.

Generated images a camera may well see (noise, flat colours, gradients, checkerboards,
stripes, text), at 128x128 so they go through the runtime's resizing, scored beside the
test split. Two operating points per score:
- the model's own threshold (its calibration's `min_score`, the `cifar-run` default), and
- the threshold that keeps `--coverage` of the test images (80% by default), so models and
  scores compare at the same in-distribution cost.

`--photos DIR` adds real photos that show none of the classes as one more kind (`photos`),
read and resized exactly as `cifar-run` reads files.

`--zoom` classifies every image, test images included, as `cifar-run --zoom` does: `1` (the default
here, as every table before 2026-12-07 was measured) is the whole square once; `auto`, `cifar-run`'s
default, answers with the setting the model's manifest carries and its threshold fitted for it.

Scores, both from the file's (calibrated) probabilities, so the contract is kept:
- `max`: the top probability;
- `margin`: top minus second probability, which separates "two close classes" from "sure".
An energy score (logsumexp of the logits) is not among them: from probabilities, the log-probabilities'
logsumexp is 0 for every input, so it needs the logits that the contract does not expose.

    python -m cifar_edge.benchmarks.ood --model accurate --limit 1000 --per-kind 100 --photos DIR
"""

from __future__ import annotations

import string
import sys

import cv2
import numpy as np

from cifar_edge.runtime.classifier import Classifier
from cifar_edge.runtime.cli import zoom_setting
from cifar_edge.runtime.data import ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, positive_int, run_cli
from cifar_edge.runtime.sources import expand_inputs, read_image_file
from cifar_edge.runtime.zoom import Zoom

KINDS = ("noise", "flat", "gradient", "checkerboard", "stripes", "text")
SIDE = 128


def generate(kind: str, count: int, rng: np.random.Generator, side: int = SIDE) -> np.ndarray:
    """`count` RGB uint8 images (count, side, side, 3) of one kind."""
    images = np.empty((count, side, side, 3), np.uint8)
    grid = np.arange(side)
    for i in range(count):
        colours = rng.integers(0, 256, (2, 3))
        if kind == "noise":
            image = rng.normal(rng.integers(40, 216), rng.integers(10, 80), (side, side, 3))
        elif kind == "flat":
            image = np.broadcast_to(colours[0], (side, side, 3))
        elif kind == "gradient":
            angle = rng.uniform(0, np.pi)
            t = (np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None]) / (side * 1.5) + 0.25
            image = colours[0] + (colours[1] - colours[0]) * np.clip(t, 0, 1)[..., None]
        elif kind == "checkerboard":
            cell = int(rng.integers(4, 33))
            mask = ((grid[:, None] // cell + grid[None, :] // cell) % 2).astype(bool)
            image = np.where(mask[..., None], colours[0], colours[1])
        elif kind == "stripes":
            period = int(rng.integers(4, 40))
            mask = (grid // max(1, period // 2)) % 2 == 0
            mask = mask[None, :] if rng.random() < 0.5 else mask[:, None]
            image = np.where(np.broadcast_to(mask, (side, side))[..., None], colours[0], colours[1])
        elif kind == "text":
            image = np.ascontiguousarray(np.broadcast_to(colours[0], (side, side, 3))).astype(np.uint8)
            for line in range(int(rng.integers(1, 4))):
                word = "".join(rng.choice(list(string.ascii_letters + string.digits), int(rng.integers(3, 8))))
                origin = (int(rng.integers(0, side // 3)), int(30 + line * 35 + rng.integers(0, 10)))
                cv2.putText(image, word, origin, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.6, 1.2)),
                            tuple(int(c) for c in colours[1]), 2, cv2.LINE_AA)
        else:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        images[i] = np.clip(image, 0, 255)
    return images


def scores(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    ordered = np.sort(probabilities, axis=1)
    return {"max": ordered[:, -1], "margin": ordered[:, -1] - ordered[:, -2]}


def evaluate(model: str | None, test_images: np.ndarray, per_kind: int, coverage: float = 0.8, seed: int = 0,
             threads: int | None = 1, photos: list[np.ndarray] | None = None, zoom: Zoom | str = "1") -> dict:
    """Rejection rates per kind at the model's threshold and at the `coverage` threshold of the test images.

    `photos`: RGB images of any size that show none of the classes, reported as the kind `photos`.
    `zoom`: as `cifar-run --zoom` (and the `Classifier`) takes it; the model's threshold is the one
    `--min-score auto` uses under it."""
    classifier = Classifier(model, threads=threads, zoom=zoom)
    calibrated = classifier.probabilities  # the calibrated answers `classify` ranks, under the zoom setting

    rng = np.random.default_rng(seed)
    inside = scores(calibrated(test_images))
    outside = {kind: scores(calibrated(generate(kind, per_kind, rng))) for kind in KINDS}
    if photos:
        outside["photos"] = scores(calibrated(photos))
    own = classifier.min_score if classifier.calibration else None
    report = {"model": classifier.model.name, "zoom": classifier.zoom.text, "calibrated": classifier.calibration is not None, "test_images": len(test_images),
              "per_kind": per_kind, "photos": len(photos or []), "kinds": list(outside), "coverage_target": coverage, "operating_points": {}}
    for score in ("max", "margin"):
        thresholds = {"at the model's threshold": own if score == "max" else None,
                      f"at {coverage:.0%} test coverage": float(np.quantile(inside[score], 1 - coverage))}
        for name, threshold in thresholds.items():
            if threshold is None:
                continue
            report["operating_points"][f"{score} {name}"] = {
                "threshold": round(threshold, 4),
                "test_coverage": float(np.mean(inside[score] >= threshold)),
                "rejected": {kind: float(np.mean(values[score] < threshold)) for kind, values in outside.items()},
            }
    return report


def markdown(report: dict) -> str:
    """One row per operating point; `all` averages the kinds, each kind weighing the same."""
    kinds = report["kinds"]
    lines = [f"| {report['model']} (--zoom {report['zoom']}) | threshold | test coverage | " + " | ".join(kinds) + " | all |",
             "|---|---:|---:|" + "---:|" * (len(kinds) + 1)]
    for name, point in report["operating_points"].items():
        rejected = [point["rejected"][kind] for kind in kinds]
        lines.append(f"| {name} | {point['threshold']:.3f} | {point['test_coverage']:.1%} | "
                     + " | ".join(f"{r:.0%}" for r in rejected) + f" | {np.mean(rejected):.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m cifar_edge.benchmarks.ood", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model file, export folder or packaged name (default: edge)")
    parser.add_argument("--limit", type=positive_int, default=1000, help="class-balanced test images (default: 1000)")
    parser.add_argument("--per-kind", type=positive_int, default=100, help="generated images of each kind (default: 100)")
    parser.add_argument("--data", help=f"CIFAR-10 source (default: ${ENV_VAR})")
    parser.add_argument("--photos", metavar="DIR", help="a folder of real photos that show none of the ten classes")
    parser.add_argument("--zoom", type=zoom_setting, default="1", metavar="auto|F[:W][,F[:W]...]",
                        help="views per image, as cifar-run --zoom takes them (default: 1, the whole square once; auto: cifar-run's default)")
    args = parser.parse_args(argv)

    def body() -> int:
        photos = None
        if args.photos:
            found = expand_inputs([args.photos])
            problems = [item for item in found if isinstance(item, str)]
            if problems:
                raise ValueError(problems[0])
            photos = [read_image_file(path) for path in found]
        test = load_cifar10(resolve_source(args.data)).test.balanced_subset(args.limit, 0)
        report = evaluate(args.model, test.images, args.per_kind, photos=photos, zoom=args.zoom)
        if not report["calibrated"]:
            print(f"{report['model']}: no calibration in its manifest: scores are raw, and there is no threshold of its own")
        print(markdown(report))
        return 0

    return run_cli("ood", body)


if __name__ == "__main__":
    sys.exit(main())
