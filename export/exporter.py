"""`export_model()`: one `.keras` file to every requested format, each validated.

For each format in the table (`cifar_edge.runtime.formats`), the exporter writes the file
atomically, opens it with the runtime engine a device would use, classifies test images,
and compares with the Keras model on the same images. A format ends as `passed`,
`validation failed` (it lost more accuracy than allowed) or `export failed`.

Conversion paths, chosen for robustness with Keras 3:
- TFLite: `model.export()` to a SavedModel, then `TFLiteConverter.from_saved_model`;
  tensor names (debug strings) are stripped, signatures kept.
  Full-integer int8 converts a copy of the model whose input is float32 raw pixel values,
  with `inference_input_type=uint8`: calibration then gives the input scale 1 and zero
  point 0, so the file takes raw uint8 pixels like every other format.
- ONNX: `tf2onnx.convert.from_keras` (Keras' own ONNX export as the fallback).
  int8 is static QDQ quantization after `quant_pre_process`, per-channel weights, with the
  calibration method chosen by accuracy on held-out training images.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cifar_edge.export.converters import add_onnx_metadata, float_input_copy
from cifar_edge.export.options import CALIBRATION_METHODS, ExportError, ExportOptions, FormatResult
from cifar_edge.export.tta_graph import with_tta
from cifar_edge.export.writers import Workspace, top1_accuracy, writer_for
from cifar_edge.runtime.calibration import Calibration, expected_calibration_error
from cifar_edge.runtime.data import Cifar10, Split
from cifar_edge.runtime.engines import EngineError, load_keras_file, open_engine
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import atomic_path, sha256_file, writable_dir, write_json
from cifar_edge.runtime.formats import ExportFormat
from cifar_edge.runtime.labels import CLASS_NAMES, INPUT_CONTRACT, OUTPUT_CONTRACT
from cifar_edge.runtime.manifest import MANIFEST
from cifar_edge.runtime.tta import views

log = logging.getLogger("cifar_edge.export")
# The public names of the export API, wherever they are defined.
__all__ = ["CALIBRATION_METHODS", "ExportError", "ExportOptions", "FormatResult", "check_contract", "convert", "export_model",
           "find_holdout", "load_keras_model"]


def load_keras_model(path: str | os.PathLike):
    """Load a `.keras` file and check the model contract, with one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; give the .keras file (cifar-train writes model.keras in its --out)")
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    import keras

    try:
        model = load_keras_file(keras, path)
    except EngineError as error:
        raise ExportError(str(error)) from None
    check_contract(model, path)
    return model


def find_holdout(model_path: str | os.PathLike, dataset: Cifar10) -> Split | None:
    """The training images a `cifar-train --holdout` run left out, from the run's config.json
    beside the model; None when there is none (or it records no holdout)."""
    config_path = Path(model_path).parent / "config.json"
    if not config_path.is_file():
        return None
    try:
        recorded = (json.loads(config_path.read_text()).get("data") or {}).get("holdout")
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise ExportError(f"{config_path}: unreadable run config ({error})") from None
    if not recorded:
        return None
    try:
        count, seed, digest = int(recorded["images"]), int(recorded["seed"]), str(recorded["sha256"])
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{config_path}: data.holdout needs images, seed and sha256") from None
    if count >= len(dataset.train):
        raise ExportError(f"{config_path}: a holdout of {count} images, but the data has {len(dataset.train)} training images")
    held = dataset.train.balanced_split(count, seed)[1]
    if held.fingerprint() != digest:
        raise ExportError(f"{config_path}: the held-out images of this data differ from the run's (is --data the run's data?)")
    return held


def check_contract(model, path) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"{path}: the model must have one input and one output")
    shape, dtype = tuple(model.inputs[0].shape), str(model.inputs[0].dtype)
    if shape[1:] != (32, 32, 3) or dtype != "uint8":
        raise ExportError(f"{path}: the model must take uint8 images (N, 32, 32, 3); it takes {dtype} {shape}")
    if tuple(model.outputs[0].shape)[1:] != (10,):
        raise ExportError(f"{path}: the model must return 10 class probabilities; it returns shape {tuple(model.outputs[0].shape)}")


def export_model(
    model_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: list[ExportFormat],
    dataset: Cifar10 | None,
    options: ExportOptions | None = None,
    on_format_done: Callable[[FormatResult], None] | None = None,
    model=None,
    holdout: Split | None = None,
) -> dict:
    """Export and validate; write `out_dir/manifest.json`; return the manifest.

    `model` is the already loaded and checked `model_path`, when the caller has it.
    `holdout`: training images the model never trained on (`find_holdout`); each file's
    calibration is fitted on them. Without them the files carry no calibration.
    """
    options = options if options is not None else ExportOptions()
    model = model if model is not None else load_keras_model(model_path)
    views(options.tta)  # an unknown mode fails before any work
    if any(f.calibrated for f in formats) and dataset is None:
        raise ExportError("int8 formats need calibration images: give the data with --data PATH or CIFAR10_DATA")
    out = writable_dir(out_dir)
    # The registry names every model (resnet8, fast, ...); a file called model.keras says less.
    name = model.name if model.name and model.name not in ("functional", "sequential") else Path(model_path).stem
    validation = dataset.test.balanced_subset(options.validate_images, options.seed) if dataset else None
    served = model if options.tta == "none" else with_tta(float_input_copy(model), options.tta)
    keras_probabilities = served.predict(validation.images, batch_size=256, verbose=0) if validation else None
    calibration, selection = calibration_sets(dataset, options) if dataset else (None, None)
    if calibration is not None and len(calibration) < 100:
        log.warning("only %d calibration images; int8 accuracy may suffer below 100", len(calibration))

    results = []
    with tempfile.TemporaryDirectory(prefix="cifar-export-") as scratch:
        work = Workspace(model, Path(scratch), options.tta)
        for export_format in formats:
            result = _export_one(work, export_format, out / export_format.filename(name), calibration, selection,
                                 validation, keras_probabilities, options, holdout)
            results.append(result)
            if on_format_done:
                on_format_done(result)
    manifest = {
        "model": name,
        "source": str(Path(model_path).resolve()),
        "class_names": list(CLASS_NAMES),
        "input": INPUT_CONTRACT,
        "output": OUTPUT_CONTRACT,
        "validation_images": len(validation) if validation else 0,
        "keras_accuracy": top1_accuracy(keras_probabilities, validation.labels) if validation else None,
        "calibration_images": len(calibration) if calibration is not None else 0,
        "holdout_images": len(holdout) if holdout is not None else 0,
        "tta": options.tta,
        "tta_views": len(views(options.tta)),
        "max_accuracy_drop_pp": options.max_accuracy_drop,
        "files": [asdict(result) for result in results],
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def convert(model, export_format: ExportFormat, target: str | os.PathLike, calibration: Split | None = None) -> FormatResult:
    """Write one format of an in-memory model to `target`, without validation.

    For callers that convert many throw-away models, like `cifar-tune` timing each
    candidate; `export_model` is the checked path for a model that ships.
    """
    if export_format.calibrated and calibration is None:
        raise ExportError(f"{export_format.name} needs calibration images")
    with tempfile.TemporaryDirectory(prefix="cifar-export-") as scratch:
        return _export_one(Workspace(model, Path(scratch)), export_format, Path(target), calibration, calibration, None, None,
                           ExportOptions())


# --- one format ----------------------------------------------------------------------


def _export_one(work, export_format, target, calibration, selection, validation, keras_probabilities, options,
                holdout: Split | None = None) -> FormatResult:
    result = FormatResult(export_format.name, precision=export_format.precision, engine=export_format.engine)
    started = time.perf_counter()
    fitted = None
    try:
        with atomic_path(target) as temporary:
            result.details = writer_for(export_format)(work, temporary, calibration, selection, options) or {}
            if holdout is not None:
                # Fitted on the file itself, as a device runs it: int8 and TTA change the scores.
                calibrating = time.perf_counter()
                fitted = Calibration.fit(open_engine(temporary).predict(holdout.images), holdout.labels)
                started += time.perf_counter() - calibrating  # export_seconds is the conversion's alone
                result.calibration = fitted.as_dict()
                if fitted.min_score >= 1.0:
                    log.warning("%s: no threshold makes %.0f%% of the %d held-out answers right; min_score 1 answers "
                                "unknown to nearly everything (a larger --holdout gives a steadier threshold)",
                                export_format.name, 100 * fitted.target_accuracy, fitted.images)
            if export_format.embeds_metadata:
                add_onnx_metadata(temporary, fitted)
    except Exception as error:  # any converter failure is this format's failure, not the run's
        result.error = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
        log.warning("%s: export failed (%s)", export_format.name, result.error)
        return result
    result.export_seconds = round(time.perf_counter() - started, 2)
    result.file = target.name
    result.size_bytes = target.stat().st_size
    result.sha256 = sha256_file(target)
    result.status = "passed"
    if validation is not None:
        try:
            engine = open_engine(target)
        except CifarEdgeError as error:  # written, but no engine can run it: this format's failure only
            result.status, result.error = "export failed", str(error)[:300]
            log.warning("%s: export failed (%s)", export_format.name, result.error)
            return result
        probabilities = engine.predict(validation.images)
        result.accuracy = top1_accuracy(probabilities, validation.labels)
        result.keras_accuracy = top1_accuracy(keras_probabilities, validation.labels)
        result.agreement = float(np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1)))
        result.max_probability_difference = float(np.abs(probabilities - keras_probabilities).max())
        result.ece = expected_calibration_error(probabilities, validation.labels)
        if fitted is not None:
            result.ece_calibrated = expected_calibration_error(fitted.apply(probabilities), validation.labels)
        if (result.keras_accuracy - result.accuracy) * 100 > options.max_accuracy_drop:
            result.status = "validation failed"
    return result


# --- helpers -------------------------------------------------------------------------


def calibration_sets(dataset: Cifar10, options: ExportOptions) -> tuple[Split, Split]:
    """Disjoint, class-balanced training images: one set calibrates, the other picks the method."""
    pool = dataset.train.balanced_subset(options.calibration_images + 1000, options.seed)
    selection, calibration = pool.balanced_split(options.calibration_images, options.seed + 1)
    return calibration, selection
