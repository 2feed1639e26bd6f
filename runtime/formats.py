"""The one table of export formats, read by the exporter, its CLI, validation and benchmarks.

It lives in the runtime because deciding which engine opens a file is a runtime question,
and the benchmarks must read it on a device with only the runtime installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportFormat:
    """One row of the format table."""

    name: str
    """Name used on the command line and in manifests, e.g. `tflite-int8`."""
    suffix: str
    """File suffix, which also picks the engine."""
    engine: str
    """`litert` or `onnxruntime`."""
    precision: str
    """What is stored: `fp32`, `fp16` weights, `int8` weights only, or full `int8`."""
    option: str
    """The `cifar-export` flag that adds it; `default` formats are always written."""
    calibrated: bool
    """Whether exporting needs calibration images."""
    description: str

    def filename(self, model_name: str) -> str:
        return f"{model_name}.{self.name}{self.suffix}"


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("tflite-fp32", ".tflite", "litert", "fp32", "default", False, "float TFLite"),
    ExportFormat("tflite-fp16", ".tflite", "litert", "fp16", "fp16", False, "fp16 weights, float compute"),
    ExportFormat("tflite-dynamic", ".tflite", "litert", "int8-weights", "dynamic", False, "int8 weights, float activations"),
    ExportFormat("tflite-int8", ".tflite", "litert", "int8", "int8", True, "full integer: builtin int8 ops only, uint8 pixels in"),
    ExportFormat("onnx-fp32", ".onnx", "onnxruntime", "fp32", "default", False, "float ONNX"),
    ExportFormat("onnx-int8", ".onnx", "onnxruntime", "int8", "int8", True, "static QDQ quantization, per-channel weights"),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)
OPTIONS = ("int8", "fp16", "dynamic")
ENGINE_BY_SUFFIX = {".tflite": "litert", ".onnx": "onnxruntime", ".keras": "keras"}


def get_format(name: str) -> ExportFormat:
    for export_format in FORMATS:
        if export_format.name == name:
            return export_format
    raise KeyError(name)


def select_formats(*, int8: bool = False, fp16: bool = False, dynamic: bool = False, every: bool = False) -> list[ExportFormat]:
    """The formats `cifar-export` writes for these flags, in table order."""
    chosen = {"default"} | {option for option, wanted in (("int8", int8), ("fp16", fp16), ("dynamic", dynamic)) if wanted}
    return [f for f in FORMATS if every or f.option in chosen]


def engine_for(path: str | Path) -> str | None:
    return ENGINE_BY_SUFFIX.get(Path(path).suffix.lower())
