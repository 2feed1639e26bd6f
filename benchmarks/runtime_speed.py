"""The runtime's own costs: classifier overhead, end-to-end video FPS (with the file's calibration
and threshold, and without), and accuracy through the photo and video paths against raw 32x32 images.

    python -m cifar_edge.benchmarks.runtime_speed --model runtime/models/edge --images 1000

Everything runs on one thread, as on a small device, and the two overhead measurements
are interleaved in rounds so machine noise hits both alike.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from cifar_edge.benchmarks.clips import frame_around, write_clip
from cifar_edge.runtime.classifier import Classifier
from cifar_edge.runtime.data import load_cifar10, resolve_source
from cifar_edge.runtime.engines import LiteRTEngine
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, positive_int, run_cli
from cifar_edge.runtime.runner import classify_frames
from cifar_edge.runtime.sources import ImageFiles, VideoFile


def classifier_overhead(classifier: Classifier, image: np.ndarray, calls: int = 2000, rounds: int = 20) -> dict:
    """Median time per call of `classify` and of a bare LiteRT set_tensor/invoke/get_tensor, side by side."""
    engine = classifier.engine
    if not isinstance(engine, LiteRTEngine):
        raise CifarEdgeError("the overhead comparison needs a .tflite model (it compares against bare LiteRT)")
    interpreter = engine._interpreter
    input_index, output_index = engine._input_index, engine._output_index
    batch = image[None].astype(engine.input_dtype)

    def bare():
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    def wrapped():
        return classifier.classify(image)

    per_round = max(1, calls // rounds)
    times = {"bare": [], "classify": []}
    for function in (wrapped, bare):  # warm both; classify first, as it resizes the input to batch 1
        for _ in range(50):
            function()
    for round_index in range(rounds):
        # Alternate which goes first, so neither always follows the other's cache state.
        order = (("bare", bare), ("classify", wrapped)) if round_index % 2 == 0 else (("classify", wrapped), ("bare", bare))
        for name, function in order:
            for _ in range(per_round):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    bare_ms = float(np.median(times["bare"])) * 1000
    classify_ms = float(np.median(times["classify"])) * 1000
    return {"calls_each": per_round * rounds, "bare_litert_ms": round(bare_ms, 4), "classify_ms": round(classify_ms, 4),
            "ratio": round(classify_ms / bare_ms, 3)}


def without_calibration(classifier: Classifier) -> Classifier:
    """The same file as `classifier`, answering as before calibration existed: raw scores, no threshold."""
    options = classifier.options
    plain = Classifier(classifier.model.path, engine=options.engine, device=options.device, threads=options.threads, fit=options.fit,
                       min_score=0, zoom=options.zoom, check_integrity=options.check_integrity)
    plain.calibration = None
    return plain


def calibration_cost(calibrated: Classifier, plain: Classifier, image: np.ndarray, calls: int = 2000, rounds: int = 20) -> dict:
    """Median time per `classify` + `answer` with the file's calibration and threshold and without, side by side."""
    def run(classifier):
        return classifier.answer(classifier.classify(image))

    per_round = max(1, calls // rounds)
    times = {"calibrated": [], "plain": []}
    for classifier in (calibrated, plain):
        for _ in range(50):
            run(classifier)
    for round_index in range(rounds):
        order = (("plain", plain), ("calibrated", calibrated)) if round_index % 2 == 0 else (("calibrated", calibrated), ("plain", plain))
        for name, classifier in order:
            for _ in range(per_round):
                start = time.perf_counter()
                run(classifier)
                times[name].append(time.perf_counter() - start)
    calibrated_ms, plain_ms = (float(np.median(times[name])) * 1000 for name in ("calibrated", "plain"))
    return {"calls_each": per_round * rounds, "plain_ms": round(plain_ms, 4), "calibrated_ms": round(calibrated_ms, 4),
            "ratio": round(calibrated_ms / plain_ms, 3)}


def _accuracy(class_ids, labels) -> float:
    return float(np.mean(np.asarray(class_ids) == np.asarray(labels)))


def measure(model: str | None, data: str | None, images: int, threads: int = 1, seed: int = 0) -> dict:
    dataset = load_cifar10(resolve_source(data))  # None: $CIFAR10_DATA, else the download
    subset = dataset.test.balanced_subset(images, seed)
    classifier = Classifier(model, threads=threads)
    results: dict = {"model": classifier.info()["path"], "format": classifier.model.format, "engine": classifier.engine.version,
                     "threads": threads, "images": len(subset.labels)}
    raw = [p[0].class_id for p in classifier.classify_batch(subset.images)]
    results["raw_accuracy"] = _accuracy(raw, subset.labels)
    if isinstance(classifier.engine, LiteRTEngine):
        results["overhead"] = classifier_overhead(classifier, subset.images[0])
    plain = without_calibration(classifier) if classifier.calibration is not None else None
    if plain is not None:
        results["calibration_cost"] = calibration_cost(classifier, plain, subset.images[0])
    with tempfile.TemporaryDirectory(prefix="runtime-speed-") as scratch:
        clip = write_clip(subset.images, Path(scratch) / "clip.mp4")
        predictions = []
        with VideoFile(clip) as video:
            stats = classify_frames(classifier, video, on_result=lambda r: predictions.append(r.predictions[0].class_id))
        results["video"] = {"frame_size": [640, 480], "accuracy": _accuracy(predictions, subset.labels),
                            "agreement_with_raw": _accuracy(predictions, raw), **stats.summary()}
        if plain is not None:
            # The same clip, answered without calibration or threshold, with the same callback. It runs
            # second, on warm caches, so if anything this overstates what calibration costs.
            plain_predictions = []
            with VideoFile(clip) as video:
                stats = classify_frames(plain, video, on_result=lambda r: plain_predictions.append(r.predictions[0].class_id))
            results["video_without_calibration"] = stats.summary()
        photos = Path(scratch) / "photos"
        photos.mkdir()
        for index, rgb in enumerate(subset.images):
            cv2.imwrite(str(photos / f"{index:05d}.jpg"), frame_around(rgb), [cv2.IMWRITE_JPEG_QUALITY, 90])
        predictions = []
        stats = classify_frames(classifier, ImageFiles([str(photos)]), on_result=lambda r: predictions.append(r.predictions[0].class_id))
        results["photos"] = {"frame_size": [640, 480], "jpeg_quality": 90, "accuracy": _accuracy(predictions, subset.labels),
                             "agreement_with_raw": _accuracy(predictions, raw), **stats.summary()}
    return results


def main(argv: list[str] | None = None) -> int:
    def body():
        parser = ArgumentParser(prog="python -m cifar_edge.benchmarks.runtime_speed", description=__doc__.splitlines()[0])
        parser.add_argument("--model", help="model file, export folder or packaged name (default: the packaged default)")
        parser.add_argument("--data", help="CIFAR-10 source (default: $CIFAR10_DATA, else download)")
        parser.add_argument("--images", type=positive_int, default=1000, help="class-balanced test images (default: 1000)")
        parser.add_argument("--threads", type=positive_int, default=1)
        args = parser.parse_args(argv)
        print(json.dumps(measure(args.model, args.data, args.images, args.threads), indent=2))

    return run_cli("runtime_speed", body)


if __name__ == "__main__":
    sys.exit(main())
