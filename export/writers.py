"""One writer per row of the format table (`cifar_edge.runtime.formats`), named after the row:
`tflite-int8` is written by `write_tflite_int8`. `writer_for` finds it, so a new format is a table row
and a function here, with no second table to keep.

Each writer is `writer(work, target, calibration, selection, options) -> details`: it writes
`target` from the shared `Workspace` and returns what the manifest row records about how.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cifar_edge.export.converters import (
    convert_onnx,
    convert_tflite,
    float_input_copy,
    fold_batch_norm_through_max_pool,
    fold_batch_norm_through_relu,
    quantize_onnx,
)
from cifar_edge.export.tta_graph import with_tta
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.formats import ExportFormat

WRITER_PREFIX = "write_"


def writer_for(export_format: ExportFormat) -> Callable:
    """The function that writes `export_format`: the one named after its row."""
    writer = globals().get(WRITER_PREFIX + export_format.name.replace("-", "_"))
    if not callable(writer):
        raise KeyError(f"no writer for format {export_format.name}")
    return writer


def top1_accuracy(probabilities, labels) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


class Workspace:
    """Intermediate files shared by several formats (SavedModels, the fp32 ONNX)."""

    def __init__(self, model, scratch: Path, tta: str = "none"):
        self.source, self.scratch, self.tta = model, scratch, tta
        # What every format computes: the model, or the model with its TTA views in the graph.
        self.model = model if tta == "none" else with_tta(float_input_copy(model), tta)
        self._cache: dict[str, Path] = {}
        self.folded: dict[str, list[str]] = {}

    def saved_model(self, float_input: bool) -> Path:
        """float_input=True is the int8 converter's input: float pixels, and BN folded back through ReLU."""
        key = f"saved_model_float_input_{float_input}"
        if key not in self._cache:
            model = self.model
            if float_input:
                model = float_input_copy(self.source)
                self.folded = {"batch_norm_folded_through_relu": fold_batch_norm_through_relu(model),
                               "batch_norm_folded_through_max_pool": fold_batch_norm_through_max_pool(model)}
                if self.tta != "none":
                    model = with_tta(model, self.tta, input_dtype="float32")
            path = self.scratch / key
            model.export(str(path), format="tf_saved_model", verbose=False)
            self._cache[key] = path
        return self._cache[key]

    def onnx_fp32(self) -> Path:
        if "onnx" not in self._cache:
            path = self.scratch / "model.onnx"
            # The fold changes no output, and onnx-int8 quantizes this file: per-tensor
            # activation scales suit the folded conv outputs better (see the TFLite path).
            model = float_input_copy(self.source, input_dtype="uint8" if self.tta == "none" else "float32", erf_gelu=True)
            fold_batch_norm_through_max_pool(model)
            if self.tta != "none":
                model = with_tta(model, self.tta)
            convert_onnx(model, path)
            self._cache["onnx"] = path
        return self._cache["onnx"]


def write_tflite_fp32(work, target, *_):
    convert_tflite(work.saved_model(float_input=False), target)


def write_tflite_fp16(work, target, *_):
    import tensorflow as tf

    convert_tflite(work.saved_model(float_input=False), target, optimize=True, supported_types=[tf.float16])


def write_tflite_dynamic(work, target, *_):
    convert_tflite(work.saved_model(float_input=False), target, optimize=True)


def write_tflite_int8(work, target, calibration, selection, options):
    import tensorflow as tf

    def representative():
        for image in calibration.images:
            yield [image[None].astype(np.float32)]

    convert_tflite(
        work.saved_model(float_input=True), target, optimize=True, representative=representative,
        supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8], input_type=tf.uint8, output_type=tf.uint8,
    )
    return {"calibration_method": "minmax", **work.folded}


def write_onnx_fp32(work, target, *_):
    target.write_bytes(work.onnx_fp32().read_bytes())


def write_onnx_int8(work, target, calibration, selection, options):
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    preprocessed = work.scratch / "model.pre.onnx"
    if not preprocessed.exists():
        quant_pre_process(str(work.onnx_fp32()), str(preprocessed))
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    candidates = list(methods) if options.calibration_method == "auto" else [options.calibration_method]
    tried = {}
    best = None
    for method in candidates:
        candidate = work.scratch / f"model.int8.{method}.onnx"
        quantize_onnx(preprocessed, candidate, calibration, methods[method])
        accuracy = top1_accuracy(open_engine(candidate).predict(selection.images), selection.labels)
        tried[method] = round(accuracy, 4)
        if best is None or accuracy > tried[best]:
            best = method
    target.write_bytes((work.scratch / f"model.int8.{best}.onnx").read_bytes())
    return {"calibration_method": best, "calibration_accuracy_by_method": tried, "selection_images": len(selection)}
