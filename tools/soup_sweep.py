"""Choose the interpolation weight of `python -m cifar_edge.train.soup` on held-out training images.

For each alpha, interpolates the two models, writes its `tflite-int8` file (the exporter's own
writer, 500 calibration images), and scores on the run's held-out images (never the test split):
the Keras and int8 accuracy on all of them, and the scenes of `python -m cifar_edge.benchmarks.scenes`
on a class-balanced subset, with `--zoom 1` and with a two-view zoom (default: the packaged
`edge`'s until 2026-12-07, 1:0.75,0.75:0.25). The int8 file's temperature is fitted on the held-out images, as
`cifar-export` fits it. Scene figures are points against the same subset's raw images.

    python tools/soup_sweep.py runs/edge-w20-kd0-400/model.keras \
        runs/edge-w20-kd0-400-zoom40-ft20-lr01/model.keras --alphas 0,0.5,0.7,0.8,0.9,1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from cifar_edge.benchmarks.scenes import BACKGROUNDS, FILLS, scene
from cifar_edge.export.exporter import calibration_sets, load_keras_model
from cifar_edge.export.options import ExportOptions
from cifar_edge.export.writers import Workspace, write_tflite_int8
from cifar_edge.runtime.calibration import apply_temperature, fit_temperature
from cifar_edge.runtime.classifier import Classifier
from cifar_edge.runtime.data import load_cifar10, resolve_source
from cifar_edge.runtime.zoom import Zoom
from cifar_edge.train.settings import HOLDOUT_SEED
from cifar_edge.train.soup import interpolate


def score(model, calibration, selection, options, holdout, scenes_split, zoom: Zoom, scratch: Path) -> dict:
    """Held-out accuracies of `model` and its int8 file (written from the exporter's `calibration` and
    `selection` images under `options`), and its scene deltas per (fill, background, rule)."""
    target = scratch / "model.tflite"
    write_tflite_int8(Workspace(model, scratch), target, calibration, selection, options)
    classifier = Classifier(str(target), threads=1, zoom=zoom.fractions, min_score=0)
    raw = classifier.engine.predict(holdout.images)
    temperature = fit_temperature(raw, holdout.labels)
    weights = np.asarray(zoom.weights, np.float32)
    base = np.mean(classifier.engine.predict(scenes_split.images).argmax(1) == scenes_split.labels)
    rng = np.random.default_rng(1)
    deltas = {}
    for fill in FILLS:
        for kind in BACKGROUNDS:
            right = np.zeros(2)
            for rgb, label in zip(scenes_split.images, scenes_split.labels, strict=True):
                views = apply_temperature(classifier.invoke(classifier.preprocess_views(scene(rgb, fill, kind, rng))), temperature)
                right += [views[0].argmax() == label, np.tensordot(weights, views, axes=1).argmax() == label]
            deltas[fill, kind] = right / len(scenes_split) - base
    keras_accuracy = np.mean(model.predict(holdout.images, batch_size=500, verbose=0).argmax(1) == holdout.labels)
    return {"keras": keras_accuracy, "int8": np.mean(raw.argmax(1) == holdout.labels), "scenes": deltas}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the run's .keras model (alpha 0)")
    parser.add_argument("tuned", help="its fine-tune's .keras model (alpha 1)")
    parser.add_argument("--alphas", default="0,0.5,0.7,0.8,0.9,1", help="comma-separated weights of the fine-tune")
    parser.add_argument("--holdout", type=int, default=5000, help="the N of the runs' cifar-train --holdout N (default: 5000)")
    parser.add_argument("--scene-images", type=int, default=1000, help="held-out images placed in scenes (default: 1000)")
    parser.add_argument("--zoom", default="1:0.75,0.75:0.25", help="the two-view rule scored beside --zoom 1")
    parser.add_argument("--data", help="CIFAR-10 source (default: $CIFAR10_DATA)")
    args = parser.parse_args(argv)
    dataset = load_cifar10(resolve_source(args.data))
    _, holdout = dataset.train.balanced_split(args.holdout, HOLDOUT_SEED)
    scenes_split = holdout.balanced_subset(min(args.scene_images, len(holdout)), 0)
    zoom = Zoom.parse(args.zoom)
    if zoom.fractions[0] != 1 or zoom.weights is None:
        parser.error(f"--zoom {args.zoom}: a weighted rule whose first view is the whole square (1:W,...)")
    base, tuned = load_keras_model(args.base), load_keras_model(args.tuned)
    columns = [(fill, kind) for fill in FILLS if fill > 0.5 for kind in BACKGROUNDS]
    print(f"{len(holdout)} held-out images; scenes on {len(scenes_split)} of them, points against their raw images "
          f"(`--zoom 1` / `--zoom {args.zoom}`)\n")
    print("| alpha | Keras | tflite-int8 | " + " | ".join(f"{fill:.0%} {kind}" for fill, kind in columns) + " |")
    print("|---:|---:|---:|" + "---:|" * len(columns))
    options = ExportOptions()
    calibration, selection = calibration_sets(dataset, options)  # the exporter's own images, made once
    for alpha in (float(a) for a in args.alphas.split(",")):
        model = interpolate(base, load_keras_model(args.tuned), alpha) if alpha < 1 else tuned
        with tempfile.TemporaryDirectory() as scratch:
            result = score(model, calibration, selection, options, holdout, scenes_split, zoom, Path(scratch))
        cells = " | ".join(f"{result['scenes'][c][0] * 100:+.1f} / {result['scenes'][c][1] * 100:+.1f}" for c in columns)
        print(f"| {alpha:g} | {result['keras']:.2%} | {result['int8']:.2%} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
