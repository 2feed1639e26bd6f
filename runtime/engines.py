"""Engines that run an exported model: uint8 RGB images in, float32 probabilities out.

LiteRT runs `.tflite` files (ai-edge-litert, else the older tflite_runtime, else tf.lite
when TensorFlow is all that is installed), ONNX Runtime runs `.onnx` files. Both read the
input and output quantization from the model itself, so callers never need to know
whether a file is float or integer.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.formats import engine_for

ENGINES = ("auto", "litert", "onnxruntime")


class EngineError(CifarEdgeError):
    """A model file that is missing, unsupported or cannot be loaded."""


class Engine:
    """Common interface: `predict(images)` with images uint8 (N, 32, 32, 3)."""

    name = ""

    def __init__(self, path: Path):
        self.path = path

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if images.ndim == 3:
            images = images[None]
        outputs = [self._run(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 10), np.float32)

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _quantize(images: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Pixels (0..255) as the model's input tensor expects them."""
    if np.issubdtype(dtype, np.floating):
        return images.astype(dtype)
    if not scale:
        return images.astype(dtype)
    info = np.iinfo(dtype)
    quantized = np.round(images.astype(np.float32) / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating) or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def litert_interpreter_class():
    """The first LiteRT interpreter that is installed, newest package first."""
    for module_name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module_name).Interpreter
        except ImportError:
            continue
    try:
        # Last resort on machines that have only TensorFlow; never a dependency of ours.
        return importlib.import_module("tensorflow").lite.Interpreter
    except ImportError:
        raise EngineError('no LiteRT interpreter is installed: pip install "cifar-edge[runtime]" (ai-edge-litert)') from None


class LiteRTEngine(Engine):
    name = "litert"

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__(path)
        interpreter_class = litert_interpreter_class()
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise EngineError(f"{path}: not a loadable TFLite model ({str(error).splitlines()[0]})") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_dtype = np.dtype(self._input["dtype"])
        self.input_quantization = tuple(self._input["quantization"])
        self.output_quantization = tuple(self._output["quantization"])
        self._batch = int(self._input["shape"][0])

    def _run(self, images: np.ndarray) -> np.ndarray:
        if len(images) != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], [len(images), *images.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        self._interpreter.set_tensor(self._input["index"], _quantize(images, self.input_dtype, *self.input_quantization))
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(self._output["index"]), *self.output_quantization)

    def operators(self) -> set[str]:
        """Names of the operators in the graph (after any delegate takes its share)."""
        return {op["op_name"] for op in self._interpreter._get_ops_details()}

    def tensor_dtypes(self) -> set[str]:
        return {np.dtype(t["dtype"]).name for t in self._interpreter.get_tensor_details()}


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None):
        super().__init__(path)
        try:
            import onnxruntime
        except ImportError:
            raise EngineError('ONNX Runtime is not installed: pip install "cifar-edge[runtime]"') from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for bad files
            raise EngineError(f"{path}: not a loadable ONNX model ({str(error).splitlines()[0][:200]})") from None
        self._input = self._session.get_inputs()[0]
        self.input_dtype = np.dtype({"tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(float)": "float32"}.get(self._input.type, "float32"))
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input.name: images.astype(self.input_dtype)})[0].astype(np.float32)


def open_engine(path: str | os.PathLike, engine: str = "auto", threads: int | None = None) -> Engine:
    """Open `path` with `engine` (`auto` picks by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: no such model file")
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = engine_for(path) or ""
    if engine == "litert":
        return LiteRTEngine(path, threads)
    if engine == "onnxruntime":
        return OnnxRuntimeEngine(path, threads)
    raise EngineError(f"{path}: unsupported model file (expected .tflite or .onnx)")
