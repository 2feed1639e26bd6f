"""Damaged manifests, models that break the contract, limits past the data, and outputs that would destroy inputs:
each a one-line error that names the input, before anything is written."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_edge.runtime.classifier import Classifier, packaged_models
from cifar_edge.runtime.engines import EngineError, open_engine
from cifar_edge.runtime.errors import CifarEdgeError
from conftest import REPO, cifar_run_exit

CLIP = REPO / "samples" / "clip.mp4"


def _damaged_copy(tmp_path: Path, change) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(packaged_models()["edge"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _set(key, value):
    return lambda manifest: manifest.__setitem__(key, value)


def _set_row(key, value):
    return lambda manifest: [row.__setitem__(key, value) for row in manifest["files"]]


@pytest.mark.parametrize("change, message", [
    (_set("files", 5), '"files" must be a list of file entries, found a number'),
    (_set("files", None), '"files" must be a list of file entries, found null'),
    (_set("files", ["model.tflite"]), "files[0] must be an object, found a string"),
    (_set_row("format", ["tflite-int8"]), "files[0].format must be a string, found a list"),
    (lambda manifest: [row.pop("file") for row in manifest["files"]], 'files[0] has no "file" name'),
    (_set_row("calibration", {"temperature": 1.0, "min_score": 0.5, "target_accuracy": 0.98, "images": float("inf")}),
     "calibration needs temperature"),
    (_set_row("calibration", {"temperature": float("inf"), "min_score": 0.5, "target_accuracy": 0.98, "images": 10}),
     "calibration out of range"),
    (_set_row("calibration", {"temperature": 1.0, "min_score": 0.5, "target_accuracy": 0.98, "images": -5}),
     "calibration images must be a positive count, found -5"),
])
def test_a_damaged_manifest_is_one_line_for_the_runtime_and_the_benchmark(tmp_path, change, message):
    from cifar_edge.benchmarks.bench import BenchError, find_candidates

    folder = _damaged_copy(tmp_path, change)
    with pytest.raises(CifarEdgeError) as raised:
        Classifier(folder)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    if "calibration" not in message:  # the benchmark reports a bad calibration as a failed row, after loading
        with pytest.raises(BenchError, match="manifest.json: " + message.replace("[", r"\[").replace("]", r"\]")):
            find_candidates([str(folder)], ("litert", "onnxruntime"))


def test_the_row_of_a_format_that_failed_to_export_is_no_obstacle(tmp_path):
    from cifar_edge.benchmarks.bench import find_candidates
    from cifar_edge.export.options import FormatResult

    failed = dataclasses.asdict(FormatResult("tflite-fp16"))  # as the exporter writes a format that did not convert
    assert failed["file"] is None and failed["sha256"] is None
    folder = _damaged_copy(tmp_path, lambda manifest: manifest["files"].append(failed))
    shipped = Classifier(folder)
    assert Classifier(shipped.model.path).model.path == shipped.model.path
    assert {c.format for c in find_candidates([str(folder)], ("litert", "onnxruntime"))} == {"tflite-int8", "onnx-int8"}


def test_files_the_manifest_lists_but_the_folder_lacks_are_named(tmp_path):
    folder = _damaged_copy(tmp_path, lambda manifest: None)
    names = [row["file"] for row in json.loads((folder / "manifest.json").read_text())["files"]]
    for name in names:
        (folder / name).unlink()
    with pytest.raises(EngineError, match="listed but missing: " + ", ".join(names)):
        Classifier(folder)


def test_a_model_that_takes_other_images_fails_at_open(tmp_path):
    keras = pytest.importorskip("keras")
    inputs = keras.Input((28, 28, 1))
    path = tmp_path / "mnist.keras"
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))).save(path)
    with pytest.raises(EngineError, match=r"mnist.keras: fails on one black image of the model contract's input, uint8 1×32×32×3 RGB \(ValueError"):
        open_engine(path)
    inputs = keras.Input((32, 32, 3))
    five = tmp_path / "five.keras"
    keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))).save(five)
    with pytest.raises(EngineError, match=r"returns shape \(1, 5\) for one image, not \(1, 10\)"):
        open_engine(five)


def test_a_keras_file_of_random_bytes_and_a_folder_are_named_for_what_they_are(tmp_path):
    pytest.importorskip("keras")
    noise = tmp_path / "noise.keras"
    noise.write_bytes(os.urandom(2000))
    with pytest.raises(EngineError, match="noise.keras: not a .keras model file"):
        open_engine(noise)
    with pytest.raises(EngineError, match="is a folder"):
        open_engine(tmp_path)
    with pytest.raises(EngineError, match="is a folder without a manifest.json"):
        Classifier(tmp_path)


def test_save_onto_the_input_video_is_refused(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    shutil.copy(CLIP, video)
    before = video.read_bytes()
    assert cifar_run_exit(["--video", str(video), "--save", str(video)]) == 2
    err = capsys.readouterr().err
    assert "is the input video itself" in err and "Traceback" not in err
    assert video.read_bytes() == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, which takes no new files even for root")
def test_save_where_no_file_can_be_made_is_one_line_even_for_root(capsys):
    assert cifar_run_exit(["--video", str(CLIP), "--save", "/proc/out.mp4"]) == 2
    err = capsys.readouterr().err
    assert "--save /proc/out.mp4: cannot write in /proc" in err and "Traceback" not in err


def test_a_video_folder_is_named_as_a_folder(tmp_path, capsys):
    assert cifar_run_exit(["--video", str(tmp_path)]) == 2
    assert "is a folder; give a video file" in capsys.readouterr().err


def _blank_png(side: int) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels: a few KB however large it declares itself."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = (b"\0" * (1 + (side + 7) // 8)) * side
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def test_images_over_the_pixel_limit_are_refused_before_they_take_the_memory(tmp_path):
    # 20,000 x 20,000 would be 1.2 GB of RGB; 2,000 x 2,000 the same file made smaller. A fresh process without
    # the variable, importing the module that imports cv2 first, as a library user might.
    (tmp_path / "huge.png").write_bytes(_blank_png(20_000))
    (tmp_path / "fine.png").write_bytes(_blank_png(2_000))
    code = ("import sys; from cifar_edge.runtime import sources, preprocess; "
            "print([preprocess.decode_rgb(open(name, 'rb').read()) is None for name in ('fine.png', 'huge.png')])")
    env = {key: value for key, value in os.environ.items() if key != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[False, True]", done.stderr


def test_a_holdout_past_the_data_is_an_error_and_leaves_no_run_folder(small_dataset, tmp_path):
    from cifar_edge.train.settings import TrainSettings
    from cifar_edge.train.trainer import TrainError, train

    settings = TrainSettings.for_model("resnet8", epochs=1, holdout=len(small_dataset.train))
    with pytest.raises(TrainError, match=f"the data has only {len(small_dataset.train)} training images"):
        train(settings, small_dataset, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_dry_run_counts_the_images_a_limit_past_the_data_would_use(image_tree, capsys):
    from cifar_edge.runtime.data import load_cifar10
    from cifar_edge.train.cli import main as train_main

    dataset = load_cifar10(image_tree)
    assert train_main(["--model", "resnet8", "--dry-run", "--data", str(image_tree), "--limit-test", "99999"]) == 0
    assert f"and {len(dataset.test)} test images" in capsys.readouterr().out


def test_a_teacher_that_breaks_the_contract_leaves_no_run_folder(small_dataset, tmp_path):
    keras = pytest.importorskip("keras")
    from cifar_edge.train.settings import TrainSettings
    from cifar_edge.train.trainer import train

    inputs = keras.Input((28, 28, 1))
    teacher = tmp_path / "mnist.keras"
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))).save(teacher)
    settings = TrainSettings.for_model("resnet8", epochs=1, limit_train=50, limit_test=20, teacher=str(teacher))
    with pytest.raises(EngineError, match="fails on one black image of the model contract's input"):
        train(settings, small_dataset, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, message", [
    ({"epochs": "three"}, "--epochs must be a whole number of at least 1, found 'three'"),
    ({"max_trials": 0}, "--max-trials must be a whole number"),
    ({"latency_budget_ms": "fast"}, "--latency-budget-ms must be a positive number"),
    ({"space": {"blocks": ["a", "b"]}}, "--blocks must be a range of two whole numbers"),
    ({"space": {"family": "resnet", "widths": [16.5, 20]}}, "--widths must be a range of two whole numbers"),
    ({"space": {"learning_rates": ["fast"]}}, "--learning-rates needs at least one positive rate"),
    ({"validation_fraction": "0.1"}, "validation fraction"),
    ({"space": {"batch_norm": "on"}}, "batch norm must allow on, off or both"),
])
def test_a_hand_edited_search_json_is_one_line(tmp_path, change, message):
    from cifar_edge.train.search_space import TuneError, TuneSettings, read_search_settings

    data = TuneSettings().as_dict()
    space = change.pop("space", {})
    if space.get("family") == "resnet":
        from cifar_edge.train.search_space import ResNetSpace

        data = TuneSettings(space=ResNetSpace()).as_dict()
    data["space"].update(space)
    data.update(change)
    (tmp_path / "search.json").write_text(json.dumps({"settings": data}))
    with pytest.raises(TuneError, match=message):
        read_search_settings(tmp_path).check()


def test_a_finished_run_is_not_replaced_unless_asked(tmp_path, capsys):
    from cifar_edge.train.cli import main as train_main
    from cifar_edge.train.settings import MODEL_FILE, TrainError, check_not_finished

    (tmp_path / MODEL_FILE).write_bytes(b"hours of training")
    code = train_main(["--model", "resnet8", "--out", str(tmp_path), "--data", str(tmp_path / "unused")])
    assert code == 2
    assert f"{tmp_path} holds a finished run ({MODEL_FILE}); choose another --out, or add --overwrite" in capsys.readouterr().err
    assert (tmp_path / MODEL_FILE).read_bytes() == b"hours of training"
    with pytest.raises(TrainError):
        check_not_finished(tmp_path, overwrite=False)
    check_not_finished(tmp_path, overwrite=True)


def test_settings_that_do_nothing_on_this_device_are_said_before_the_run():
    from cifar_edge.train.device import device_notices

    cpu, gpu, two = ({"accelerators": names} for names in ([], ["H200"], ["H200", "H200"]))
    assert device_notices("auto", "none", cpu) == device_notices("bfloat16", "none", cpu) == []
    assert "several times slower" in device_notices("on", "none", cpu)[0]
    assert device_notices("on", "none", gpu) == device_notices("auto", "mirrored", two) == []
    assert device_notices("auto", "mirrored", gpu) == ["--distribute mirrored with 1 GPU here: one replica, no speed-up"]
    assert device_notices("auto", "mirrored", cpu) == ["--distribute mirrored with no GPU here: one replica, no speed-up"]


def test_bfloat16_on_a_cpu_that_emulates_it_is_said_before_the_run():
    from cifar_edge.runtime.machine import cpu_flags
    from cifar_edge.train.device import device_notices, native_bfloat16

    epyc = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
    xeon = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n"
    pi5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n\nModel\t\t: Raspberry Pi 5 Model B\n"
    assert [native_bfloat16(cpu_flags(text)) for text in (epyc, xeon, pi5, "processor\t: 0\n")] == [False, True, False, None]
    emulated, native, unknown = ({"accelerators": [], "cpu": "AMD EPYC", "native_bfloat16": flag} for flag in (False, True, None))
    assert "AMD EPYC" in device_notices("bfloat16", "none", emulated)[0] and "emulated" in device_notices("bfloat16", "none", emulated)[0]
    assert device_notices("bfloat16", "none", native) == device_notices("bfloat16", "none", unknown) == []
    assert device_notices("off", "none", emulated) == device_notices("bfloat16", "none", {**emulated, "accelerators": ["H200"]}) == []
