"""Engines that run an exported model: uint8 RGB images in, float32 probabilities out.

LiteRT runs `.tflite` files (ai-edge-litert, else the older tflite_runtime, else tf.lite
when TensorFlow is all that is installed), ONNX Runtime runs `.onnx` files. Both read the
input and output quantization from the model itself, so callers never need to know
whether a file is float or integer.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path

import numpy as np

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.formats import engine_for
from cifar_edge.runtime.labels import IMAGE_SIZE, NUM_CLASSES
from cifar_edge.runtime.manifest import MANIFEST
from cifar_edge.runtime.quiet import native_notices_filtered

ENGINES = ("auto", "litert", "onnxruntime", "keras")
DEVICES = ("cpu", "gpu")
# ONNX Runtime's GPU providers, best first; CPU stays last as the fallback for unsupported ops.
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class EngineError(CifarEdgeError):
    """A model file that is missing, unsupported or cannot be loaded."""


class Engine:
    """Common interface: `predict(images)` with images uint8 (N, 32, 32, 3)."""

    name = ""
    version = ""
    """The engine package and its version, e.g. `ai_edge_litert 2.3.0`."""
    input_dtype = np.dtype("uint8")

    def __init__(self, path: Path):
        self.path = path

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        if images.ndim == 3:
            images = images[None]
        if len(images) <= batch_size:
            # One call for the common case: a camera frame must not pay for slicing and concatenating.
            return self._run(images)
        outputs = [self._run(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
        return np.concatenate(outputs)  # len(images) > batch_size: at least one batch

    def _run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _quantize(images: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Pixels (0..255) as the model's input tensor expects them."""
    if np.issubdtype(dtype, np.floating) or not scale:
        return images.astype(dtype, copy=False)
    if dtype == images.dtype and (scale, zero_point) == (1.0, 0):
        return images
    info = np.iinfo(dtype)
    quantized = np.round(images.astype(np.float32) / scale + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating) or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def _dequantize_table(dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray | None:
    """For 8-bit outputs, every dequantized value by raw byte: one lookup instead of three array ops."""
    if dtype not in (np.uint8, np.int8) or not scale:
        return None
    raw = np.arange(256, dtype=np.uint8).view(dtype)
    return _dequantize(raw, scale, zero_point)


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


def _litert():
    for module_name, package in (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime")):
        try:
            return importlib.import_module(module_name).Interpreter, _package_version(package)
        except ImportError:
            continue
    try:
        # Last resort on machines that have only TensorFlow; never a dependency of ours.
        return importlib.import_module("tensorflow").lite.Interpreter, _package_version("tensorflow") + " (tf.lite)"
    except ImportError:
        raise EngineError('no LiteRT interpreter is installed: pip install "cifar-edge[runtime]" (ai-edge-litert)') from None


class LiteRTEngine(Engine):
    name = "litert"

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__(path)
        interpreter_class, self.version = _litert()
        try:
            # LiteRT announces its XNNPACK delegate from C++ on every load, whatever the log level.
            with native_notices_filtered():
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
        # The per-frame path is a few microseconds of Python around a ~0.1 ms invoke, so the
        # decisions that do not change per call are made once here.
        self._input_index, self._output_index = self._input["index"], self._output["index"]
        self._pixels_are_input = self.input_dtype == np.uint8 and self.input_quantization in ((1.0, 0), (0.0, 0))
        self._dequantize_table = _dequantize_table(np.dtype(self._output["dtype"]), *self.output_quantization)

    def _run(self, images: np.ndarray) -> np.ndarray:
        if len(images) != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, [len(images), *images.shape[1:]])
            self._interpreter.allocate_tensors()
            self._batch = len(images)
        if images.dtype != self.input_dtype or not self._pixels_are_input:
            images = _quantize(images, self.input_dtype, *self.input_quantization)
        self._interpreter.set_tensor(self._input_index, images)
        self._interpreter.invoke()
        output = self._interpreter.get_tensor(self._output_index)
        if self._dequantize_table is not None:
            return self._dequantize_table[output.view(np.uint8)]
        return _dequantize(output, *self.output_quantization)

    def operators(self) -> set[str]:
        """Names of the operators in the graph (after any delegate takes its share)."""
        return {op["op_name"] for op in self._interpreter._get_ops_details()}

    def tensor_dtypes(self) -> set[str]:
        return {np.dtype(t["dtype"]).name for t in self._interpreter.get_tensor_details()}


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        try:
            import onnxruntime
        except ImportError:
            raise EngineError('ONNX Runtime is not installed: pip install "cifar-edge[runtime]"') from None
        self.version = f"onnxruntime {onnxruntime.__version__}"
        providers = ["CPUExecutionProvider"]
        if device == "gpu":
            available = onnxruntime.get_available_providers()
            gpu = [provider for provider in GPU_PROVIDERS if provider in available]
            if not gpu:
                raise EngineError(
                    f"--device gpu: ONNX Runtime has no GPU provider here (available: {', '.join(available)}); "
                    "install onnxruntime-gpu with CUDA, or use --device cpu"
                )
            providers = [*gpu, "CPUExecutionProvider"]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # ORT raises its own exception types for bad files
            raise EngineError(f"{path}: not a loadable ONNX model ({str(error).splitlines()[0][:200]})") from None
        self.providers = self._session.get_providers()
        if device == "gpu" and self.providers == ["CPUExecutionProvider"]:
            # ORT falls back to the CPU silently when a GPU provider fails to start (no driver, wrong CUDA).
            raise EngineError(f"--device gpu: {', '.join(providers[:-1])} could not start here; use --device cpu")
        self._input = self._session.get_inputs()[0]
        self.input_dtype = np.dtype({"tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(float)": "float32"}.get(self._input.type, "float32"))
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input.name: images.astype(self.input_dtype)})[0].astype(np.float32)


class KerasEngine(Engine):
    """A `.keras` file through whatever Keras backend is installed (TensorFlow, JAX or PyTorch).

    Keras is optional for the runtime and imported only here, so a Pi never needs it.
    """

    name = "keras"

    def __init__(self, path: Path, threads: int | None = None, device: str = "cpu"):
        super().__init__(path)
        try:
            keras = importlib.import_module("keras")
        except ImportError:
            raise EngineError(f"{path}: .keras models need Keras (pip install keras plus a backend); use a .tflite or .onnx file") from None
        self.version = f"keras {keras.__version__} ({keras.backend.backend()})"
        if device == "gpu" and not _keras_backend_has_gpu(keras.backend.backend()):
            raise EngineError(f"--device gpu: the Keras {keras.backend.backend()} backend sees no GPU here; use --device cpu")
        if threads:
            _limit_keras_threads(keras.backend.backend(), threads)
        self._model = load_keras_file(keras, path)

    def _run(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict_on_batch(images.astype(np.uint8, copy=False)), dtype=np.float32)


def load_keras_file(keras, path: Path):
    """`keras.models.load_model(path)` with one-line EngineErrors for what is not a loadable `.keras` file.

    The one place this check lives: the Keras engine and `cifar-export`'s loader both call it.
    """
    if not zipfile.is_zipfile(path):
        raise EngineError(f"{path}: not a .keras model file (not a zip archive)")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for damaged or foreign archives
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise EngineError(f"{path}: not a loadable Keras model ({type(error).__name__}: {first_line})") from None


def _limit_keras_threads(backend: str, threads: int) -> None:
    """Hold the backend to `threads`, as LiteRT and ONNX Runtime are, so rows compare fairly.

    TensorFlow accepts this only before it first runs anything; in a process where it already
    has (a notebook, a training run), its pools stay as they are. JAX reads its thread count
    from XLA flags at import, which is too late here, so it is left alone.
    """
    if backend == "tensorflow":
        tf = importlib.import_module("tensorflow")
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # "cannot be modified after initialization"
            return
    elif backend == "torch":
        importlib.import_module("torch").set_num_threads(threads)


def _keras_backend_has_gpu(backend: str) -> bool:
    try:
        if backend == "jax":
            return any(d.platform == "gpu" for d in importlib.import_module("jax").devices())
        if backend == "torch":
            return bool(importlib.import_module("torch").cuda.is_available())
        if backend == "tensorflow":
            return bool(importlib.import_module("tensorflow").config.list_physical_devices("GPU"))
    except RuntimeError:  # jax raises when no platform (GPU or otherwise) can start
        return False
    return False


def open_engine(path: str | os.PathLike, engine: str = "auto", threads: int | None = None, device: str = "cpu",
                check: bool = True) -> Engine:
    """Open `path` with `engine` (`auto` picks by suffix) on `device` (`cpu` or `gpu`); with `check`,
    `probe_contract` then runs it once (a caller timing the load alone probes after its timer)."""
    opened = _open(Path(path), engine, threads, device)
    return probe_contract(opened) if check else opened


def probe_contract(engine: Engine) -> Engine:
    """Run one black image through `engine`: a model that does not take uint8 N×32×32×3 or does
    not return 10 scores per image fails here, as one line, not at its first real input."""
    try:
        output = engine.predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
    except Exception as error:  # each engine raises its own types; whatever the cause, the model cannot answer
        detail = (str(error).splitlines() or [""])[0][:160]
        raise EngineError(f"{engine.path}: fails on one black image of the model contract's input, uint8 1×{IMAGE_SIZE}×{IMAGE_SIZE}×3 RGB "
                          f"({type(error).__name__}: {detail})") from None
    if output.shape != (1, NUM_CLASSES):
        raise EngineError(f"{engine.path}: returns shape {tuple(output.shape)} for one image, not (1, {NUM_CLASSES}) class probabilities")
    return engine


def _open(path: Path, engine: str, threads: int | None, device: str) -> Engine:
    if path.is_dir():
        raise EngineError(f"{path}: is a folder without a {MANIFEST}, not a model file")
    if not path.is_file():
        raise EngineError(f"{path}: no such model file")
    if engine not in ENGINES:
        raise EngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if device not in DEVICES:
        raise EngineError(f"unknown device {device!r}; choose cpu or gpu")
    if engine == "auto":
        engine = engine_for(path) or ""
    if engine == "litert":
        if device == "gpu":
            raise EngineError("--device gpu: LiteRT's Python package has no GPU delegate; use an .onnx or .keras model for the GPU")
        return LiteRTEngine(path, threads)
    if engine == "onnxruntime":
        return OnnxRuntimeEngine(path, threads, device)
    if engine == "keras":
        return KerasEngine(path, threads, device)
    raise EngineError(f"{path}: unsupported model file (expected .tflite, .onnx or .keras)")
