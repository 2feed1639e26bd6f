"""The one table of export formats, read by the exporter, its CLI, validation and benchmarks.

It lives in the runtime because deciding which engine opens a file is a runtime question,
and the benchmarks must read it on a device with only the runtime installed. Everything
else is derived from it: the `cifar-export` flags (`OPTIONS`), the exporter's writer per row
(`cifar_edge.export.writers`, named after the row), the suffixes and engines `cifar-bench` knows.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    """What the file is, for `cifar-export --help`."""
    embeds_metadata: bool = False
    """Whether class names, the model contract and calibration are written into the file itself
    (ONNX metadata_props); other files rely on the manifest beside them."""

    def filename(self, model_name: str) -> str:
        return f"{model_name}.{self.name}{self.suffix}"


FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("tflite-fp32", ".tflite", "litert", "fp32", "default", False, "float TFLite"),
    ExportFormat("tflite-fp16", ".tflite", "litert", "fp16", "fp16", False, "fp16 weights, float compute"),
    ExportFormat("tflite-dynamic", ".tflite", "litert", "int8-weights", "dynamic", False, "int8 weights, float activations"),
    ExportFormat("tflite-int8", ".tflite", "litert", "int8", "int8", True, "full integer: builtin int8 ops only, uint8 pixels in"),
    ExportFormat("onnx-fp32", ".onnx", "onnxruntime", "fp32", "default", False, "float ONNX", embeds_metadata=True),
    ExportFormat("onnx-int8", ".onnx", "onnxruntime", "int8", "int8", True, "static QDQ quantization, per-channel weights",
                 embeds_metadata=True),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)
#: The `cifar-export` flags (`--int8`, `--fp16`, `--dynamic`), in the order the table first names them.
OPTIONS = tuple(dict.fromkeys(f.option for f in FORMATS if f.option != "default"))
#: The Keras source a format is exported from: benchmarked as the reference, never exported.
REFERENCE_SUFFIX, REFERENCE_ENGINE = ".keras", "keras"
ENGINE_BY_SUFFIX = {**{f.suffix: f.engine for f in FORMATS}, REFERENCE_SUFFIX: REFERENCE_ENGINE}
#: Every file suffix a model may have, and every engine that runs one, in table order.
MODEL_SUFFIXES = tuple(ENGINE_BY_SUFFIX)
ENGINES = tuple(dict.fromkeys(ENGINE_BY_SUFFIX.values()))


def get_format(name: str) -> ExportFormat:
    for export_format in FORMATS:
        if export_format.name == name:
            return export_format
    raise KeyError(name)


def formats_of_option(option: str) -> list[ExportFormat]:
    return [f for f in FORMATS if f.option == option]


def select_formats(options: Iterable[str] = (), *, every: bool = False) -> list[ExportFormat]:
    """The formats `cifar-export` writes for these flags (names from `OPTIONS`), in table order."""
    chosen = {"default", *options}
    unknown = chosen - {"default", *OPTIONS}
    if unknown:
        raise ValueError(f"unknown export option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}")
    return [f for f in FORMATS if every or f.option in chosen]


def engine_for(path: str | Path) -> str | None:
    return ENGINE_BY_SUFFIX.get(Path(path).suffix.lower())
