"""Model integrity: a file with a manifest beside it is hashed before use, and a mismatch refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cifar_edge.benchmarks.cli import main as bench_main
from cifar_edge.runtime import Classifier
from cifar_edge.runtime.classifier import packaged_models, resolve_model
from cifar_edge.runtime.cli import main as run_main
from cifar_edge.runtime.files import sha256_file
from cifar_edge.runtime.integrity import SKIP_FLAG, IntegrityError, recorded_sha256, verify_model_file
from conftest import REPO, export_file

SAMPLE = REPO / "samples" / "images" / "00-airplane.jpg"
FAST = ["--min-time", "0.05", "--warmup", "2", "--batch-sizes", "1"]


@pytest.fixture
def edge_copy(tmp_path) -> Path:
    """The packaged edge model's folder (manifest, .tflite, .onnx), copied to change freely."""
    folder = tmp_path / "edge"
    shutil.copytree(packaged_models()["edge"], folder)
    return folder


def _packaged_file(folder: Path, format_name: str) -> Path:
    """The file of `format_name` in a packaged folder, by its manifest (the name depends on the model shipped)."""
    return export_file((folder, json.loads((folder / "manifest.json").read_text())), format_name)


def _flip(path: Path, fraction: float, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_packaged_and_intact_files_pass(edge_copy):
    for name, folder in packaged_models().items():
        models = [p for p in folder.iterdir() if p.suffix in (".tflite", ".onnx")]
        assert len(models) == 2, name
        for model in models:
            assert verify_model_file(model) == sha256_file(model), name
    assert verify_model_file(_packaged_file(edge_copy, "tflite-int8")) is not None


def test_the_resolved_row_carries_the_recorded_digest(edge_copy):
    # Classifier checks against this digest, so the manifest is read once per load, not twice.
    for spec in (edge_copy, _packaged_file(edge_copy, "onnx-int8")):
        resolved = resolve_model(spec)
        assert resolved.sha256 == recorded_sha256(resolved.path) == sha256_file(resolved.path)
    assert verify_model_file(resolved.path, None) is None  # an unrecorded digest: nothing to check
    with pytest.raises(IntegrityError, match="does not match"):
        verify_model_file(resolved.path, "0" * 64)


def test_twelve_mangled_tflite_files_are_all_refused(edge_copy):
    model = _packaged_file(edge_copy, "tflite-int8")
    original = model.read_bytes()
    for trial in range(12):
        model.write_bytes(original)
        _flip(model, (trial + 0.5) / 12, bit=trial % 8)
        with pytest.raises(IntegrityError, match="does not match"):
            Classifier(model)
    model.write_bytes(original)
    Classifier(model)


def test_cifar_run_names_the_file_and_both_digests_and_the_flag_goes_on(edge_copy, capsys):
    model = _packaged_file(edge_copy, "tflite-int8")
    expected = recorded_sha256(model)
    _flip(model, 0.6)  # inside the weights: the file still loads, and would answer wrongly
    actual = sha256_file(model)
    for spec in (model, edge_copy):  # the file, or its folder
        assert run_main([str(SAMPLE), "--model", str(spec)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"cifar-run: error: {model}: sha256 {actual} does not match {expected}"), err
        assert SKIP_FLAG in err[0]
    assert run_main([str(SAMPLE), "--model", str(model), SKIP_FLAG]) == 0
    assert capsys.readouterr().out.startswith(f"{SAMPLE}: ")  # a changed model may answer anything: it ran
    assert len(Classifier(model, check_integrity=False).classify(np.zeros((32, 32, 3), np.uint8))) == 1


def test_a_file_without_a_recorded_digest_is_used_as_it_is(tmp_path):
    alone = tmp_path / "alone.tflite"
    shutil.copy(_packaged_file(packaged_models()["edge"], "tflite-int8"), alone)
    _flip(alone, 0.6)
    assert recorded_sha256(alone) is None and verify_model_file(alone) is None
    Classifier(alone)


def test_cifar_bench_refuses_a_changed_file_before_loading_data(edge_copy, tmp_path, capsys):
    onnx = _packaged_file(edge_copy, "onnx-int8")
    _flip(onnx, 0.6)
    # --data points nowhere: the integrity error must come first.
    assert bench_main([str(edge_copy), "--out", str(tmp_path / "out"), "--data", str(tmp_path / "no-data"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{onnx.name}: sha256 " in err[0] and "does not match" in err[0], err
    assert not (tmp_path / "out").exists()


def test_cifar_bench_measures_a_changed_file_with_the_flag(edge_copy, tmp_path, image_tree, capsys):
    _flip(_packaged_file(edge_copy, "tflite-int8"), 0.6)
    out = tmp_path / "out"
    code = bench_main([str(edge_copy), "--out", str(out), "--data", str(image_tree), "--limit", "20", "--engines", "litert",
                       SKIP_FLAG, *FAST])
    assert code == 0, capsys.readouterr().err
    assert (out / "results.json").is_file()
