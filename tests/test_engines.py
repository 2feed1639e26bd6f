"""The runtime engines: quantization handling and one-line errors for bad model files."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_edge.runtime import engines
from cifar_edge.runtime.engines import EngineError, _dequantize, _quantize, open_engine
from cifar_edge.runtime.formats import FORMATS, engine_for, get_format


def test_uint8_input_with_unit_scale_passes_pixels_unchanged():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert np.array_equal(_quantize(pixels, np.dtype("uint8"), 1.0, 0), pixels)


def test_int8_input_is_shifted_by_its_zero_point():
    pixels = np.array([[0, 128, 255]], dtype=np.uint8)
    assert _quantize(pixels, np.dtype("int8"), 1.0, -128).tolist() == [[-128, 0, 127]]


def test_float_input_gets_raw_pixel_values():
    pixels = np.array([[0, 255]], dtype=np.uint8)
    assert _quantize(pixels, np.dtype("float32"), 0.0, 0).tolist() == [[0.0, 255.0]]


def test_quantized_outputs_are_dequantized_with_the_models_parameters():
    values = np.array([[0, 128, 255]], dtype=np.uint8)
    np.testing.assert_allclose(_dequantize(values, 1 / 256, 0), [[0.0, 0.5, 255 / 256]])
    assert _dequantize(np.array([[0.25]], np.float32), 0.0, 0).tolist() == [[0.25]]


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_corrupt_model_files_are_engine_errors(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a model" * 50)
    with pytest.raises(EngineError, match="not a loadable"):
        open_engine(path)


def test_missing_and_unsupported_files_are_engine_errors(tmp_path):
    with pytest.raises(EngineError, match="no such model file"):
        open_engine(tmp_path / "absent.tflite")
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(EngineError, match="unsupported"):
        open_engine(other)
    with pytest.raises(EngineError, match="unknown engine"):
        open_engine(other, engine="tensorrt")


def test_no_litert_anywhere_says_what_to_install(monkeypatch):
    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(engines.importlib, "import_module", missing)
    with pytest.raises(EngineError, match="ai-edge-litert"):
        engines._litert()[0]


def test_litert_falls_back_to_tflite_runtime(monkeypatch):
    class FakeModule:
        Interpreter = object()

    def only_tflite_runtime(name):
        if name == "tflite_runtime.interpreter":
            return FakeModule
        raise ImportError(name)

    monkeypatch.setattr(engines.importlib, "import_module", only_tflite_runtime)
    assert engines._litert()[0] is FakeModule.Interpreter


def test_the_format_table_maps_suffixes_to_engines():
    for export_format in FORMATS:
        assert engine_for(f"x{export_format.suffix}") == export_format.engine
        assert get_format(export_format.name) is export_format
    assert len({f.name for f in FORMATS}) == len(FORMATS)
