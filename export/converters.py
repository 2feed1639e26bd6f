"""The converters behind every format: Keras to TFLite and ONNX, ONNX int8 quantization,
and the weight rewrites that keep int8 accurate. `writers` composes them per format."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from cifar_edge.runtime.calibration import Calibration
from cifar_edge.runtime.data import Split
from cifar_edge.runtime.labels import CLASS_NAMES, INPUT_CONTRACT, OUTPUT_CONTRACT
from cifar_edge.runtime.quiet import native_notices_filtered

log = logging.getLogger("cifar_edge.export")


def float_input_copy(model, input_dtype: str = "float32", erf_gelu: bool = False):
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


def fold_batch_norm_through_relu(model) -> list[str]:
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


def fold_batch_norm_through_max_pool(model) -> list[str]:
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


def convert_tflite(saved_model: Path, target: Path, *, optimize=False, supported_types=None, representative=None,
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
    with quiet(), native_notices_filtered():  # the converter's C++ prints "fully_quantize: ..." per int8 file
        target.write_bytes(converter.convert())
    strip_tensor_names(target)


def strip_tensor_names(path: Path) -> None:
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


def convert_onnx(model, target: Path) -> None:
    import tensorflow as tf

    signature = (tf.TensorSpec((None, 32, 32, 3), tf.uint8, name="image"),)
    try:
        import tf2onnx

        logging.getLogger("tf2onnx").setLevel(logging.WARNING)
        with quiet():
            tf2onnx.convert.from_keras(model, input_signature=signature, opset=17, output_path=str(target))
    except Exception as error:  # tf2onnx is reported broken on some Keras 3 graphs
        log.warning("tf2onnx failed (%s); trying Keras' own ONNX export", error)
        model.export(str(target), format="onnx", verbose=False)


def quantize_onnx(source: Path, target: Path, calibration: Split, method) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([{input_name: calibration.images[i : i + 50]} for i in range(0, len(calibration), 50)])

        def get_next(self):
            return next(self._batches, None)

    with quiet():
        quantize_static(
            str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=method,
        )


def add_onnx_metadata(path: Path, calibration: Calibration | None = None) -> None:
    """Write the contract, the class names and the calibration into the ONNX file's metadata_props."""
    entries = {"class_names": json.dumps(list(CLASS_NAMES)), "input": json.dumps(INPUT_CONTRACT), "output": json.dumps(OUTPUT_CONTRACT)}
    if calibration is not None:
        entries["calibration"] = json.dumps(calibration.as_dict())
    _write_onnx_metadata(path, path, lambda _: entries)


def update_onnx_metadata(source: Path, target: Path, changes: dict[str, str | None]) -> None:
    """Write a copy of the ONNX file `source` to `target` with some metadata_props entries set (None removes one)."""

    def changed(entries: dict[str, str]) -> dict[str, str]:
        entries = {**entries, **changes}
        return {key: value for key, value in entries.items() if value is not None}

    _write_onnx_metadata(source, target, changed)


def _write_onnx_metadata(source: Path, target: Path, entries_from) -> None:
    import onnx

    model = onnx.load(str(source))
    entries = entries_from({p.key: p.value for p in model.metadata_props})
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))


@contextlib.contextmanager
def quiet():
    """The converters print pages of progress to stdout; keep the CLI's output readable."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield
