"""Choose `cifar-run --zoom` weights on held-out training images, never the test split.

Builds the scenes of `python -m cifar_edge.benchmarks.scenes` from the training images a
`cifar-train --holdout N` run left out (the same N, the same seed), classifies every centred
crop once, and scores offline every rule over the whole view and one crop: the most confident
view, and the weighted mean of the two views' calibrated probabilities for whole-view weights
from 0.5 to 0.95. `--views 3` adds the weighted means of the whole view and two crops (weights in
steps of 0.05, the whole view's at least 0.3); `--alternatives` adds three rules `cifar-run` does not
offer, to tell whether the weighted mean is what limits the scenes: the crop when its top score beats
the whole view's by a margin, the weighted geometric mean, and a mean weighted by each view's top score
to a power. Prints the rules that meet the scene goal (75% fill within 3 points of the raw images,
100% within 1, worst background) first, then the nearest misses.

    python tools/zoom_weights.py --model runtime/models/edge/resnet8-w20.tflite-int8.tflite --limit 2000

Then check the chosen setting once on the test split with `python -m cifar_edge.benchmarks.scenes --zoom ...`.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from cifar_edge.benchmarks.scenes import BACKGROUNDS, FILLS, scene
from cifar_edge.runtime.classifier import Classifier
from cifar_edge.runtime.data import load_cifar10, resolve_source
from cifar_edge.train.settings import HOLDOUT_SEED

CROPS = (0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
WEIGHTS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
GOAL = {0.75: -0.03, 1.0: -0.01}  # the default-path goal: points against the raw images


def collect(model: str, images: np.ndarray, seed: int = 1) -> tuple[np.ndarray, dict]:
    """Calibrated probabilities of the raw images (N, 10) and, per (fill, background), of every view (N, views, 10)."""
    classifier = Classifier(model, threads=1, zoom=(1.0, *CROPS), min_score=0)
    calibrate = classifier.calibration.apply if classifier.calibration is not None else (lambda p: p)
    rng = np.random.default_rng(seed)
    views = {(fill, kind): np.stack([calibrate(classifier.invoke(classifier.preprocess_views(scene(rgb, fill, kind, rng))))
                                     for rgb in images]) for fill in FILLS for kind in BACKGROUNDS}
    return calibrate(classifier.engine.predict(images)), views


def rules(views: int = 2, alternatives: bool = False) -> dict[str, callable]:
    """Rule name (`--zoom` spelling, else a description) -> a function of (N, views, 10) probabilities to the N answers."""
    found = {"1": lambda p: p[:, 0].argmax(1)}
    for index, crop in enumerate(CROPS, start=1):
        found[f"1,{crop:g}"] = lambda p, i=index: np.where(p[:, 0].max(1) >= p[:, i].max(1), p[:, 0].argmax(1), p[:, i].argmax(1))
        for w in WEIGHTS:
            found[f"1:{w:g},{crop:g}:{1 - w:g}"] = lambda p, i=index, w=w: (w * p[:, 0] + (1 - w) * p[:, i]).argmax(1)
    if views >= 3:
        steps = np.round(np.arange(0.05, 0.96, 0.05), 2)
        for (i, a), (j, b) in itertools.combinations(enumerate(CROPS, start=1), 2):
            for wa, wb in itertools.product(steps, steps):
                whole = round(1 - wa - wb, 2)
                if whole >= 0.3:
                    found[f"1:{whole:g},{a:g}:{wa:g},{b:g}:{wb:g}"] = _weighted((0, i, j), (whole, wa, wb))
    if alternatives:
        for index, crop in enumerate(CROPS, start=1):
            for margin in np.round(np.arange(0.05, 0.5, 0.05), 2):
                found[f"(crop {crop:g} if it beats the whole view by {margin:g})"] = lambda p, i=index, m=margin: np.where(
                    p[:, i].max(1) > p[:, 0].max(1) + m, p[:, i].argmax(1), p[:, 0].argmax(1))
            for w in WEIGHTS:
                found[f"(geometric 1:{w:g},{crop:g}:{1 - w:g})"] = lambda p, i=index, w=w: (
                    w * np.log(p[:, 0] + 1e-12) + (1 - w) * np.log(p[:, i] + 1e-12)).argmax(1)
                for power in (1, 2, 4):
                    found[f"(top-score^{power} weighted 1:{w:g},{crop:g}:{1 - w:g})"] = lambda p, i=index, w=w, k=power: (
                        (w * p[:, 0].max(1, keepdims=True) ** k) * p[:, 0] + ((1 - w) * p[:, i].max(1, keepdims=True) ** k) * p[:, i]).argmax(1)
    return found


def _weighted(views: tuple[int, ...], weights: tuple[float, ...]) -> callable:
    """The rule answering with the weighted mean of the given views (indices into the second axis)."""
    w = np.asarray(weights, np.float32)
    return lambda p: np.tensordot(p[:, list(views)], w, axes=([1], [0])).argmax(1)


def table(raw: np.ndarray, views: dict, labels: np.ndarray, found: dict[str, callable]) -> list[tuple[str, dict]]:
    """Every rule's worst-background points against the raw images per fill, goal-meeting rules first."""
    base = np.mean(raw.argmax(1) == labels)
    rows = []
    for name, rule in found.items():
        delta = {fill: min(np.mean(rule(views[fill, kind]) == labels) for kind in BACKGROUNDS) - base for fill in FILLS}
        rows.append((name, delta))
    return sorted(rows, key=lambda row: -min(row[1][fill] - goal for fill, goal in GOAL.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model file or export folder")
    parser.add_argument("--holdout", type=int, default=5000, help="the N of the model's cifar-train --holdout N (default: 5000)")
    parser.add_argument("--limit", type=int, default=2000, help="class-balanced held-out images to use (default: 2000)")
    parser.add_argument("--rows", type=int, default=15, help="rows to print (default: 15)")
    parser.add_argument("--views", type=int, choices=(2, 3), default=2, help="the most views a weighted rule combines (default: 2)")
    parser.add_argument("--alternatives", action="store_true", help="also score rules cifar-run does not offer (margin, geometric, top-score weighted)")
    parser.add_argument("--data", help="CIFAR-10 source (default: $CIFAR10_DATA)")
    args = parser.parse_args(argv)
    _, holdout = load_cifar10(resolve_source(args.data)).train.balanced_split(args.holdout, HOLDOUT_SEED)
    split = holdout.balanced_subset(min(args.limit, len(holdout)), 0)
    raw, views = collect(args.model, split.images)
    print(f"{len(split)} held-out images, raw accuracy {np.mean(raw.argmax(1) == split.labels):.2%}; points against it, worst background:\n")
    print("| --zoom | " + " | ".join(f"{fill:.0%} fill" for fill in FILLS) + " | meets the goal |\n|---|" + "---:|" * len(FILLS) + "---|")
    for name, delta in table(raw, views, split.labels, rules(args.views, args.alternatives))[: args.rows]:
        meets = all(delta[fill] >= goal for fill, goal in GOAL.items())
        print(f"| {name} | " + " | ".join(f"{delta[fill] * 100:+.1f}" for fill in FILLS) + f" | {'yes' if meets else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
