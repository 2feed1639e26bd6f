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

import contextlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cifar_edge.export.tta_graph import with_tta
from cifar_edge.runtime.calibration import Calibration, expected_calibration_error
from cifar_edge.runtime.data import Cifar10, Split, balanced_indices
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import atomic_path, sha256_file, writable_dir, write_json
from cifar_edge.runtime.formats import ExportFormat
from cifar_edge.runtime.labels import CLASS_NAMES, INPUT_CONTRACT, OUTPUT_CONTRACT
from cifar_edge.runtime.quiet import native_notices_filtered
from cifar_edge.runtime.tta import views

log = logging.getLogger("cifar_edge.export")

CALIBRATION_METHODS = ("auto", "minmax", "entropy", "percentile")


class ExportError(CifarEdgeError):
    pass


@dataclass
class FormatResult:
    """What happened to one format."""

    format: str
    status: str = "export failed"
    file: str | None = None
    precision: str = ""
    engine: str = ""
    size_bytes: int | None = None
    sha256: str | None = None
    export_seconds: float | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None
    agreement: float | None = None
    max_probability_difference: float | None = None
    calibration: dict | None = None
    """`cifar_edge.runtime.calibration.Calibration`, fitted on held-out training images; None without them."""
    ece: float | None = None
    """Expected calibration error (15 bins) of the file's own scores on the validation images."""
    ece_calibrated: float | None = None
    """The same after the calibration's temperature."""
    details: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ExportOptions:
    """Choices for one export run."""

    calibration_images: int = 500
    """Training images used to calibrate int8 formats (class-balanced, fixed seed)."""
    calibration_method: str = "auto"
    """ONNX int8 calibration: `auto` tries every method and keeps the most accurate."""
    validate_images: int = 2000
    """Test images each exported file is checked on."""
    tta: str = "none"
    """Test-time augmentation built into every exported graph: none, flip or 6 views
    (`cifar_edge.runtime.tta`); the Keras reference is checked with the same views."""
    max_accuracy_drop: float = 1.0
    """Percentage points an exported file may lose against Keras before it fails."""
    seed: int = 0


def load_keras_model(path: str | os.PathLike):
    """Load a `.keras` file and check the model contract, with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ExportError(f"{path}: not a .keras model file (not a zip archive)")
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for damaged or foreign files
        raise ExportError(f"{path}: cannot load the Keras model ({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
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
    options: ExportOptions = ExportOptions(),
    on_format_done: Callable[[FormatResult], None] | None = None,
    model=None,
    holdout: Split | None = None,
) -> dict:
    """Export and validate; write `out_dir/manifest.json`; return the manifest.

    `model` is the already loaded and checked `model_path`, when the caller has it.
    `holdout`: training images the model never trained on (`find_holdout`); each file's
    calibration is fitted on them. Without them the files carry no calibration.
    """
    model = model if model is not None else load_keras_model(model_path)
    views(options.tta)  # an unknown mode fails before any work
    if any(f.calibrated for f in formats) and dataset is None:
        raise ExportError("int8 formats need calibration images: give the data with --data PATH or CIFAR10_DATA")
    out = writable_dir(out_dir)
    # The registry names every model (resnet8, fast, ...); a file called model.keras says less.
    name = model.name if model.name and model.name not in ("functional", "sequential") else Path(model_path).stem
    validation = dataset.test.balanced_subset(options.validate_images, options.seed) if dataset else None
    served = model if options.tta == "none" else with_tta(_float_input_copy(model), options.tta)
    keras_probabilities = served.predict(validation.images, batch_size=256, verbose=0) if validation else None
    calibration, selection = _calibration_sets(dataset, options) if dataset else (None, None)
    if calibration is not None and len(calibration) < 100:
        log.warning("only %d calibration images; int8 accuracy may suffer below 100", len(calibration))

    results = []
    with tempfile.TemporaryDirectory(prefix="cifar-export-") as scratch:
        work = _Workspace(model, Path(scratch), options.tta)
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
        "keras_accuracy": _accuracy(keras_probabilities, validation.labels) if validation else None,
        "calibration_images": len(calibration) if calibration is not None else 0,
        "holdout_images": len(holdout) if holdout is not None else 0,
        "tta": options.tta,
        "tta_views": len(views(options.tta)),
        "max_accuracy_drop_pp": options.max_accuracy_drop,
        "files": [asdict(result) for result in results],
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def convert(model, export_format: ExportFormat, target: str | os.PathLike, calibration: Split | None = None) -> FormatResult:
    """Write one format of an in-memory model to `target`, without validation.

    For callers that convert many throw-away models, like `cifar-tune` timing each
    candidate; `export_model` is the checked path for a model that ships.
    """
    if export_format.calibrated and calibration is None:
        raise ExportError(f"{export_format.name} needs calibration images")
    with tempfile.TemporaryDirectory(prefix="cifar-export-") as scratch:
        return _export_one(_Workspace(model, Path(scratch)), export_format, Path(target), calibration, calibration, None, None,
                           ExportOptions())


# --- one format ----------------------------------------------------------------------


class _Workspace:
    """Intermediate files shared by several formats (SavedModels, the fp32 ONNX)."""

    def __init__(self, model, scratch: Path, tta: str = "none"):
        self.source, self.scratch, self.tta = model, scratch, tta
        # What every format computes: the model, or the model with its TTA views in the graph.
        self.model = model if tta == "none" else with_tta(_float_input_copy(model), tta)
        self._cache: dict[str, Path] = {}
        self.folded: dict[str, list[str]] = {}

    def saved_model(self, float_input: bool) -> Path:
        """float_input=True is the int8 converter's input: float pixels, and BN folded back through ReLU."""
        key = f"saved_model_float_input_{float_input}"
        if key not in self._cache:
            model = self.model
            if float_input:
                model = _float_input_copy(self.source)
                self.folded = {"batch_norm_folded_through_relu": _fold_batch_norm_through_relu(model),
                               "batch_norm_folded_through_max_pool": _fold_batch_norm_through_max_pool(model)}
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
            model = _float_input_copy(self.source, input_dtype="uint8" if self.tta == "none" else "float32", erf_gelu=True)
            _fold_batch_norm_through_max_pool(model)
            if self.tta != "none":
                model = with_tta(model, self.tta)
            _convert_onnx(model, path)
            self._cache["onnx"] = path
        return self._cache["onnx"]


def _export_one(work, export_format, target, calibration, selection, validation, keras_probabilities, options,
                holdout: Split | None = None) -> FormatResult:
    result = FormatResult(export_format.name, precision=export_format.precision, engine=export_format.engine)
    started = time.perf_counter()
    fitted = None
    try:
        with atomic_path(target) as temporary:
            result.details = _EXPORTERS[export_format.name](work, temporary, calibration, selection, options) or {}
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
            if export_format.suffix == ".onnx":
                _add_onnx_metadata(temporary, fitted)
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
        result.accuracy = _accuracy(probabilities, validation.labels)
        result.keras_accuracy = _accuracy(keras_probabilities, validation.labels)
        result.agreement = float(np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1)))
        result.max_probability_difference = float(np.abs(probabilities - keras_probabilities).max())
        result.ece = expected_calibration_error(probabilities, validation.labels)
        if fitted is not None:
            result.ece_calibrated = expected_calibration_error(fitted.apply(probabilities), validation.labels)
        if (result.keras_accuracy - result.accuracy) * 100 > options.max_accuracy_drop:
            result.status = "validation failed"
    return result


def _tflite_fp32(work, target, *_):
    _convert_tflite(work.saved_model(float_input=False), target)


def _tflite_fp16(work, target, *_):
    import tensorflow as tf

    _convert_tflite(work.saved_model(float_input=False), target, optimize=True, supported_types=[tf.float16])


def _tflite_dynamic(work, target, *_):
    _convert_tflite(work.saved_model(float_input=False), target, optimize=True)


def _tflite_int8(work, target, calibration, selection, options):
    import tensorflow as tf

    def representative():
        for image in calibration.images:
            yield [image[None].astype(np.float32)]

    _convert_tflite(
        work.saved_model(float_input=True), target, optimize=True, representative=representative,
        supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8], input_type=tf.uint8, output_type=tf.uint8,
    )
    return {"calibration_method": "minmax", **work.folded}


def _onnx_fp32(work, target, *_):
    target.write_bytes(work.onnx_fp32().read_bytes())


def _onnx_int8(work, target, calibration, selection, options):
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
        _quantize_onnx(preprocessed, candidate, calibration, methods[method])
        accuracy = _accuracy(open_engine(candidate).predict(selection.images), selection.labels)
        tried[method] = round(accuracy, 4)
        if best is None or accuracy > tried[best]:
            best = method
    target.write_bytes((work.scratch / f"model.int8.{best}.onnx").read_bytes())
    return {"calibration_method": best, "calibration_accuracy_by_method": tried, "selection_images": len(selection)}


_EXPORTERS = {
    "tflite-fp32": _tflite_fp32,
    "tflite-fp16": _tflite_fp16,
    "tflite-dynamic": _tflite_dynamic,
    "tflite-int8": _tflite_int8,
    "onnx-fp32": _onnx_fp32,
    "onnx-int8": _onnx_int8,
}


# --- converters ----------------------------------------------------------------------


def _float_input_copy(model, input_dtype: str = "float32", erf_gelu: bool = False):
    """The same network and weights, taking raw pixel values (0..255) as `input_dtype`.

    erf_gelu=True writes exact GELU as 0.5 x (1 + erf(x / sqrt 2)): Keras' TensorFlow GELU
    uses Erfc, which tf2onnx cannot convert, while Erf is a standard ONNX op. TFLite's
    converter maps the Keras form to its own GELU op, so it keeps the original.
    """
    import keras

    class ErfGelu(keras.layers.Layer):
        """Exact GELU from Erf; only for conversion, never saved."""

        def call(self, x):
            return 0.5 * x * (1.0 + keras.ops.erf(x * np.float32(1 / np.sqrt(2))))

    def clone(layer):
        if erf_gelu and isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.gelu:
            return ErfGelu(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, input_tensors=keras.Input((32, 32, 3), dtype=input_dtype, name="image"), clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _fold_batch_norm_through_relu(model) -> list[str]:
    """Rescale each Dense(ReLU) -> BatchNorm pair so the BN multiplies by +-1; return the Dense names.

    The tutorial head is Dense -> ReLU -> BN. TFLite folds that BN into the *next* dense
    layer, scaling its input rows by gamma/sqrt(var+eps), which spans 0.08 to 31 in a
    trained vgg3-plus. One int8 scale per output channel cannot hold rows that far apart,
    and the logits lost 5 to 11 points. ReLU is positively homogeneous, relu(s*z) = s*relu(z)
    for s > 0, so the magnitude can move into the Dense instead, where weights are quantized
    per output channel and each unit's ReLU output lands on a common scale. The float model
    computes the same function (cross-layer equalization, Nagel et al. 2019).
    """
    import keras

    folded = []
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or not (bn.scale and bn.center) or bn.axis not in (-1, len(bn.input.shape) - 1):
            continue
        dense = bn.input._keras_history.operation
        if not isinstance(dense, keras.layers.Dense) or dense.activation is not keras.activations.relu or len(dense._outbound_nodes) != 1:
            continue
        gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn.get_weights())
        multiplier = gamma / np.sqrt(variance + bn.epsilon)
        scale = np.where(np.abs(multiplier) > 0, np.abs(multiplier), 1.0)
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel * scale.astype(kernel.dtype), bias * scale.astype(bias.dtype)])
        variance = variance * scale**2
        bn.set_weights([w.astype(np.float32) for w in ((multiplier / scale) * np.sqrt(variance + bn.epsilon), beta, mean * scale, variance)])
        folded.append(dense.name)
    return folded


def _fold_batch_norm_through_max_pool(model) -> list[str]:
    """Move each Conv -> MaxPool -> BatchNorm's per-channel magnitude into the conv; return the conv names.

    In conv -> pool -> BN nets (`fast`, `airbench94`) the converter cannot fuse the BN into
    the conv across the pool, so int8 quantizes the conv and pool outputs per tensor while
    their channels differ in scale by as much as the BN later divides out (for
    `airbench94` trained 16 epochs this cost tflite-int8 0.45 points). Max-pooling commutes
    with a positive per-channel scale, max(s*z) = s*max(z) for s > 0, so |gamma|/sqrt(var+eps)
    can move into the conv's kernel, which int8 quantizes per output channel; the BN is left
    multiplying by +-1. The float model computes the same function.
    """
    import keras

    folded = []
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or bn.axis not in (-1, len(bn.input.shape) - 1):
            continue
        pool = bn.input._keras_history.operation
        if not isinstance(pool, keras.layers.MaxPooling2D) or len(pool._outbound_nodes) != 1:
            continue
        conv = pool.input._keras_history.operation
        if not isinstance(conv, keras.layers.Conv2D) or conv.activation is not keras.activations.linear or len(conv._outbound_nodes) != 1:
            continue
        variance = np.asarray(bn.moving_variance, np.float64)
        gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(variance)
        multiplier = gamma / np.sqrt(variance + bn.epsilon)
        scale = np.where(np.abs(multiplier) > 0, np.abs(multiplier), 1.0)
        conv.kernel.assign((np.asarray(conv.kernel, np.float64) * scale).astype(np.float32))
        if conv.use_bias:
            conv.bias.assign((np.asarray(conv.bias, np.float64) * scale).astype(np.float32))
        bn.moving_mean.assign((np.asarray(bn.moving_mean, np.float64) * scale).astype(np.float32))
        if bn.scale:
            # gamma' / sqrt(var' + eps) = multiplier / scale = +-1, with var' = var * scale^2.
            new_variance = variance * scale**2
            bn.moving_variance.assign(new_variance.astype(np.float32))
            bn.gamma.assign((multiplier / scale * np.sqrt(new_variance + bn.epsilon)).astype(np.float32))
        else:
            # No gamma: the multiplier is positive and becomes exactly 1.
            bn.moving_variance.assign(np.full_like(variance, 1.0 - bn.epsilon).astype(np.float32))
        folded.append(conv.name)
    return folded


def _convert_tflite(saved_model: Path, target: Path, *, optimize=False, supported_types=None, representative=None,
                    supported_ops=None, input_type=None, output_type=None) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if supported_types:
        converter.target_spec.supported_types = supported_types
    if representative:
        converter.representative_dataset = representative
    if supported_ops:
        converter.target_spec.supported_ops = supported_ops
    if input_type is not None:
        converter.inference_input_type = input_type
    if output_type is not None:
        converter.inference_output_type = output_type
    with _quiet(), native_notices_filtered():  # the converter's C++ prints "fully_quantize: ..." per int8 file
        target.write_bytes(converter.convert())
    _strip_tensor_names(target)


def _strip_tensor_names(path: Path) -> None:
    """Drop tensor names, which are debug strings (fused-op names run to hundreds of bytes).

    This saves about 6 KB on resnet8, 7% of its int8 file. Signatures stay, so
    `get_signature_runner()` still works; engines address tensors by index.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    model.description = None
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = None
    flatbuffer_utils.write_model(model, str(path))


def _convert_onnx(model, target: Path) -> None:
    import tensorflow as tf

    signature = (tf.TensorSpec((None, 32, 32, 3), tf.uint8, name="image"),)
    try:
        import tf2onnx

        logging.getLogger("tf2onnx").setLevel(logging.WARNING)
        with _quiet():
            tf2onnx.convert.from_keras(model, input_signature=signature, opset=17, output_path=str(target))
    except Exception as error:  # tf2onnx is reported broken on some Keras 3 graphs
        log.warning("tf2onnx failed (%s); trying Keras' own ONNX export", error)
        model.export(str(target), format="onnx", verbose=False)


def _quantize_onnx(source: Path, target: Path, calibration: Split, method) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{input_name: calibration.images[i : i + 50]} for i in range(0, len(calibration), 50)])

        def get_next(self):
            return next(self._batches, None)

    with _quiet():
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method,
        )


def _add_onnx_metadata(path: Path, calibration: Calibration | None = None) -> None:
    import onnx

    model = onnx.load(str(path))
    entries = {"class_names": json.dumps(list(CLASS_NAMES)), "input": json.dumps(INPUT_CONTRACT), "output": json.dumps(OUTPUT_CONTRACT)}
    if calibration is not None:
        entries["calibration"] = json.dumps(calibration.as_dict())
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


@contextlib.contextmanager
def _quiet():
    """The converters print pages of progress to stdout; keep the CLI's output readable."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


# --- helpers -------------------------------------------------------------------------


def _accuracy(probabilities, labels) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def _calibration_sets(dataset: Cifar10, options: ExportOptions) -> tuple[Split, Split]:
    """Disjoint, class-balanced training images: one set calibrates, the other picks the method."""
    pool = dataset.train.balanced_subset(options.calibration_images + 1000, options.seed)
    chosen = balanced_indices(pool.labels, options.calibration_images, options.seed + 1)
    rest = np.setdiff1d(np.arange(len(pool)), chosen)
    return Split(pool.images[chosen], pool.labels[chosen]), Split(pool.images[rest], pool.labels[rest])
