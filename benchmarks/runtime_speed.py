"""The runtime's own costs: classifier overhead, video FPS, and photo and video accuracy against raw images.

The video FPS is end to end, with the file's calibration and threshold and without, and with the zoom its
manifest carries and one view; the accuracy is through the photo and video paths (default flags) against the
raw 32x32 test images.

    python -m cifar_edge.benchmarks.runtime_speed --model runtime/models/edge --images 1000

Everything runs on one thread, as on a small device, and the two overhead measurements
are interleaved in rounds so machine noise hits both alike.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
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


def side_by_side(functions: dict[str, Callable[[], object]], calls: int, rounds: int) -> tuple[int, dict[str, float]]:
    """Calls each, and the median milliseconds per call of every function, timed in interleaved rounds.

    Each is warmed first, in the given order; then the rounds alternate which goes first, so
    neither always follows the other's cache state.
    """
    per_round = max(1, calls // rounds)
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        for _ in range(50):
            function()
    for round_index in range(rounds):
        order = list(functions.items())
        for name, function in (order[::-1] if round_index % 2 == 0 else order):
            for _ in range(per_round):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    return per_round * rounds, {name: float(np.median(values)) * 1000 for name, values in times.items()}


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

    # classify is warmed first, as it resizes the input to batch 1.
    calls_each, ms = side_by_side({"classify": lambda: classifier.classify(image), "bare": bare}, calls, rounds)
    return {"calls_each": calls_each, "bare_litert_ms": round(ms["bare"], 4), "classify_ms": round(ms["classify"], 4),
            "ratio": round(ms["classify"] / ms["bare"], 3)}


def without_calibration(classifier: Classifier) -> Classifier:
    """The same file as `classifier`, answering as before calibration existed: raw scores, no threshold."""
    options = classifier.options
    plain = Classifier(classifier.model.path, engine=options.engine, device=options.device, threads=options.threads, fit=options.fit,
                       min_score=0, zoom=options.zoom, check_integrity=options.check_integrity)
    plain.calibration = None
    return plain


def calibration_cost(calibrated: Classifier, plain: Classifier, image: np.ndarray, calls: int = 2000, rounds: int = 20) -> dict:
    """Median time per `classify` + `answer` with the file's calibration and threshold and without, side by side."""
    calls_each, ms = side_by_side({name: (lambda c=c: c.answer(c.classify(image))) for name, c in
                                   (("calibrated", calibrated), ("plain", plain))}, calls, rounds)
    return {"calls_each": calls_each, "plain_ms": round(ms["plain"], 4), "calibrated_ms": round(ms["calibrated"], 4),
            "ratio": round(ms["calibrated"] / ms["plain"], 3)}


def video_fps_side_by_side(classifiers: dict[str, Classifier], clip: Path, passes: int = 3) -> dict:
    """Median end-to-end FPS of each classifier over the whole clip, in `passes` interleaved passes.

    The order alternates from pass to pass, so neither classifier always reads the clip on
    warm caches; one pass each once measured 25% apart on the same file for that reason alone.
    """
    fps: dict[str, list[float]] = {name: [] for name in classifiers}
    for index in range(passes):
        order = list(classifiers.items())
        for name, classifier in (order if index % 2 == 0 else order[::-1]):
            with VideoFile(clip) as video:
                fps[name].append(classify_frames(classifier, video).summary()["fps"])
    medians = {name: float(np.median(values)) for name, values in fps.items()}
    first, second = list(classifiers)
    return {"passes": passes, **{f"{name}_fps": round(value, 1) for name, value in medians.items()},
            "ratio": round(medians[first] / medians[second], 3)}


def _accuracy(class_ids, labels) -> float:
    return float(np.mean(np.asarray(class_ids) == np.asarray(labels)))


def measure(model: str | None, data: str | None, images: int, threads: int = 1, seed: int = 0) -> dict:
    dataset = load_cifar10(resolve_source(data))  # None: $CIFAR10_DATA, else the download
    subset = dataset.test.balanced_subset(images, seed)
    classifier = Classifier(model, threads=threads)  # the default flags: the manifest's zoom and threshold
    # Classifier overhead is against one bare inference, so it is measured on one view.
    one_view = classifier if classifier.zoom.fractions == (1.0,) else Classifier(model, threads=threads, zoom=(1.0,))
    results: dict = {"model": classifier.info()["path"], "format": classifier.model.format, "engine": classifier.engine.version,
                     "threads": threads, "images": len(subset.labels), "zoom": classifier.zoom.text}
    raw = [p[0].class_id for p in classifier.classify_batch(subset.images)]
    results["raw_accuracy"] = _accuracy(raw, subset.labels)
    if isinstance(classifier.engine, LiteRTEngine):
        results["overhead"] = classifier_overhead(one_view, subset.images[0])
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
            results["video_fps"] = video_fps_side_by_side({"calibrated": classifier, "plain": plain}, clip)
        if one_view is not classifier:
            results["zoom_video_fps"] = video_fps_side_by_side({"zoom": classifier, "one_view": one_view}, clip)
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
