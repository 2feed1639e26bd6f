"""The runtime: `Classifier`, frame sources and `cifar-run`, on a tiny exported model."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from cifar_edge.runtime import Classifier, Prediction, tta
from cifar_edge.runtime import cli as run_cli
from cifar_edge.runtime.classifier import DEFAULT_MODEL, ImageError, packaged_models
from cifar_edge.runtime.cli import main
from cifar_edge.runtime.engines import EngineError
from cifar_edge.runtime.formats import FORMATS
from cifar_edge.runtime.labels import CLASS_NAMES
from cifar_edge.runtime.sources import Camera, Frame, FrameSource, ImageFiles, SourceError, VideoFile, read_image_file
from conftest import REPO, export_file

RED_RGB = (255, 0, 0)


def _records(capsys) -> tuple[list[dict], str]:
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines() if line.strip()], captured.err


def _write_clip(path: Path, images: np.ndarray, size=(640, 480), fps=20.0) -> Path:
    """Test images upscaled into the centre of `size` frames, as a camera would frame a subject."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for rgb in images:
        frame = np.zeros((height, width, 3), np.uint8)
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        frame[top : top + side, left : left + side] = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def tflite_int8(tiny_export) -> Path:
    return export_file(tiny_export, "tflite-int8")


@pytest.fixture(scope="module")
def clip(small_dataset, tmp_path_factory) -> Path:
    return _write_clip(tmp_path_factory.mktemp("clip") / "clip.avi", small_dataset.test.images[:24])


# --- Classifier --------------------------------------------------------------------------


@pytest.mark.parametrize("export_format", FORMATS, ids=lambda f: f.name)
def test_classifier_runs_every_format_with_the_manifests_labels(tiny_export, export_format, small_dataset):
    classifier = Classifier(export_file(tiny_export, export_format.name))
    assert classifier.model.format == export_format.name
    assert classifier.class_names == CLASS_NAMES
    predictions = classifier.classify(small_dataset.test.images[0], top_k=3)
    assert len(predictions) == 3 and all(isinstance(p, Prediction) for p in predictions)
    scores = [p.score for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-3
    assert predictions[0].label == CLASS_NAMES[predictions[0].class_id]


def test_classify_batch_matches_classify(tflite_int8, small_dataset):
    classifier = Classifier(tflite_int8)
    images = small_dataset.test.images[:8]
    assert classifier.classify_batch(images, top_k=2) == [classifier.classify(image, top_k=2) for image in images]
    assert classifier.classify_batch([]) == []


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tflite_and_onnx_files_of_one_model_agree(tiny_export, small_dataset, precision):
    tflite = Classifier(export_file(tiny_export, f"tflite-{precision}"))
    onnx = Classifier(export_file(tiny_export, f"onnx-{precision}"))
    images = small_dataset.test.images
    a, b = tflite.invoke(images), onnx.invoke(images)
    agreement = float(np.mean(a.argmax(1) == b.argmax(1)))
    if precision == "fp32":
        assert agreement == 1.0 and np.abs(a - b).max() < 1e-4
    else:
        # Two different int8 quantizers: close, not identical.
        assert agreement >= 0.9, agreement


def test_keras_engine_agrees_with_the_tflite_export(tiny_model, tiny_export, small_dataset):
    pytest.importorskip("keras")
    keras_probabilities = Classifier(tiny_model).invoke(small_dataset.test.images[:20])
    tflite_probabilities = Classifier(export_file(tiny_export, "tflite-fp32")).invoke(small_dataset.test.images[:20])
    assert np.abs(keras_probabilities - tflite_probabilities).max() < 1e-4


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), id="gray-2d"),
        pytest.param(lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], id="gray-hw1"),
        pytest.param(lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), id="rgba"),
        pytest.param(lambda rgb: rgb.astype(np.uint16) * 257, id="rgb-16bit"),
        pytest.param(lambda rgb: rgb, id="rgb"),
    ],
)
def test_every_image_mode_becomes_the_models_input(tflite_int8, small_dataset, make):
    rgb = small_dataset.test.images[3]
    classifier = Classifier(tflite_int8)
    prepared = classifier.preprocess(make(rgb))
    assert prepared.shape == (32, 32, 3) and prepared.dtype == np.uint8
    if prepared.std(axis=2).max() > 0:  # colour modes keep the pixels exactly
        assert np.array_equal(prepared, rgb)


def test_large_photo_is_cropped_and_area_resized_back_to_the_subject(tflite_int8, small_dataset):
    classifier = Classifier(tflite_int8)
    agree = 0
    for rgb in small_dataset.test.images[:20]:
        photo = np.zeros((3000, 4000, 3), np.uint8)
        photo[:, 500:3500] = cv2.resize(rgb, (3000, 3000), interpolation=cv2.INTER_CUBIC)
        prepared = classifier.preprocess(photo)
        assert np.abs(prepared.astype(int) - rgb).mean() < 6
        agree += classifier.classify(photo)[0].class_id == classifier.classify(rgb)[0].class_id
    assert agree >= 18


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_tiny_and_odd_shaped_images_are_accepted(tflite_int8, fit):
    classifier = Classifier(tflite_int8, fit=fit)
    for shape in [(1, 1, 3), (2, 7, 3), (31, 33, 3), (480, 640, 3)]:
        assert len(classifier.classify(np.full(shape, 128, np.uint8))) == 1


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 5, 3), np.uint8), "shape"),
        (np.zeros((4, 4, 2), np.uint8), "channels"),
        (np.zeros((4, 4, 3), np.float64), "uint8 or uint16"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
    ],
)
def test_images_it_cannot_take_are_one_line_errors(tflite_int8, image, message):
    with pytest.raises(ImageError, match=message):
        Classifier(tflite_int8).classify(image)


def test_bad_options_and_models_are_one_line_errors(tmp_path, tflite_int8):
    with pytest.raises(EngineError, match="no such model file"):
        Classifier(tmp_path / "absent.tflite")
    with pytest.raises(EngineError, match="packaged"):
        Classifier("no-such-model-name")
    with pytest.raises(EngineError, match="unsupported"):
        Classifier(Path(__file__))
    with pytest.raises(Exception, match="fit"):
        Classifier(tflite_int8, fit="zoom")
    with pytest.raises(EngineError, match="GPU delegate"):
        Classifier(tflite_int8, device="gpu")


def test_gpu_without_a_gpu_provider_lists_the_available_ones(tiny_export):
    onnxruntime = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a CUDA provider")
    with pytest.raises(EngineError, match="CPUExecutionProvider"):
        Classifier(export_file(tiny_export, "onnx-int8"), device="gpu")


def test_export_folder_resolves_to_its_int8_file(tiny_export):
    out, _ = tiny_export
    assert Classifier(out).model.format == "tflite-int8"
    assert Classifier(out, engine="onnxruntime").model.format == "onnx-int8"


def test_default_packaged_model_loads_with_both_engines(small_dataset):
    assert DEFAULT_MODEL in packaged_models()
    litert = Classifier()
    onnx = Classifier(engine="onnxruntime")
    assert litert.model.packaged and litert.model.format == "tflite-int8" and onnx.model.format == "onnx-int8"
    agreement = np.mean(litert.invoke(small_dataset.test.images).argmax(1) == onnx.invoke(small_dataset.test.images).argmax(1))
    assert agreement >= 0.9


#: The release models (MODEL_CARD.md): name -> the most its tflite-int8 file may weigh (None: no limit).
RELEASE_MODELS = {"edge": 150 * 1024, "accurate": None}


@pytest.mark.parametrize("name", sorted(RELEASE_MODELS))
def test_release_models_ship_with_their_keras_sources(name, small_dataset, capsys):
    assert main(["--model", name, "--info", "--json"]) == 0
    (info,), _ = _records(capsys)
    assert info["model"] == name and info["packaged"] and info["format"] == "tflite-int8"
    assert RELEASE_MODELS[name] is None or Path(info["path"]).stat().st_size <= RELEASE_MODELS[name]
    folder = packaged_models()[name]
    manifest = json.loads((folder / "manifest.json").read_text())
    source_path = (folder / manifest["source"]).resolve()  # relative to the manifest's folder
    assert source_path == REPO / "models" / f"{name}.keras" and all(row["status"] == "passed" for row in manifest["files"])
    keras = pytest.importorskip("keras")
    source = keras.models.load_model(source_path, compile=False)
    images = small_dataset.test.images
    # Compared under the views the file has in its graph (the manifest's tta), if any.
    expected = tta.predict(lambda x: source.predict(x, verbose=0), images, manifest.get("tta", "none"))
    agreement = np.mean(Classifier(name).invoke(images).argmax(1) == expected.argmax(1))
    assert agreement >= 0.95, "the shipped int8 file and the .keras it came from agree"


def test_classifying_with_the_runtime_imports_no_tensorflow(small_dataset):
    code = (
        "import sys, numpy as np\n"
        "from cifar_edge.runtime import Classifier\n"
        "Classifier().classify(np.zeros((48, 64, 3), np.uint8))\n"
        "Classifier(engine='onnxruntime').classify(np.zeros((48, 64, 3), np.uint8))\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_the_runtime_loads_no_engine():
    code = (
        "import sys\n"
        "import cifar_edge.runtime\n"
        "loaded = [m for m in ('onnxruntime', 'ai_edge_litert', 'tensorflow', 'cv2') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- Sources -----------------------------------------------------------------------------


def _red_bgr(shape=(48, 64)) -> np.ndarray:
    image = np.zeros((*shape, 3), np.uint8)
    image[:, :, 2] = 255  # OpenCV order: this is red
    return image


def test_image_files_are_read_as_rgb(tmp_path):
    cv2.imwrite(str(tmp_path / "red.png"), _red_bgr())
    assert tuple(read_image_file(tmp_path / "red.png")[0, 0]) == RED_RGB


def test_video_frames_are_rgb_and_none_is_skipped(tmp_path):
    path = tmp_path / "red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for _ in range(7):
        writer.write(_red_bgr())
    writer.release()
    with VideoFile(path) as video:
        frames = list(video)
    assert [f.index for f in frames] == list(range(7))
    assert all(f.image[..., 0].mean() > 200 and f.image[..., 2].mean() < 50 for f in frames)


def test_camera_keeps_only_the_newest_frame(clip):
    import time

    with Camera(clip) as camera:
        indices = []
        with pytest.raises(SourceError, match="stream ended"):
            for frame in camera:
                indices.append(frame.index)
                assert frame.image.shape == (480, 640, 3)
                time.sleep(0.05)  # a slow consumer: the reader thread must drop, not queue
    assert indices == sorted(set(indices)), "a frame was handed out twice or out of order"
    assert len(indices) < 24 and indices[-1] == 23, indices


def test_camera_that_cannot_open_is_a_source_error():
    with pytest.raises(SourceError, match="cannot be opened"):
        Camera("/dev/video-does-not-exist")


def test_csi_camera_goes_through_picamera2_and_comes_out_rgb(monkeypatch):
    delivered = []

    class FakePicamera2:
        def create_video_configuration(self, main):
            assert main["format"] == "RGB888"  # B, G, R bytes in memory, like OpenCV
            return main

        def configure(self, config):
            pass

        def start(self):
            pass

        def capture_array(self):
            if len(delivered) == 3:
                raise RuntimeError("camera unplugged")
            delivered.append(1)
            return _red_bgr()

        def stop(self):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    frames = []
    with Camera("csi") as camera, pytest.raises(SourceError, match=r"stream ended after 3 frames \(the driver said RuntimeError: camera unplugged\)"):
        for frame in camera:
            frames.append(frame)
    assert frames and all(tuple(f.image[0, 0]) == RED_RGB for f in frames)


def test_folders_globs_and_missing_paths_expand_in_order(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.png", "a/deep/2.jpg", "b.png"):
        cv2.imwrite(str(tmp_path / name), _red_bgr())
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    frames = list(ImageFiles([str(tmp_path / "a"), str(tmp_path / "*.png"), str(tmp_path / "missing.jpg")]))
    assert [Path(f.source).name for f in frames] == ["1.png", "2.jpg", "b.png", "missing.jpg"]
    assert frames[-1].error == "no such file or folder"


# --- cifar-run ---------------------------------------------------------------------------

IMAGE_WRITERS = {
    "jpg": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
    "png-gray": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)),
    "png-rgba": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)),
    "png-16bit": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257),
    "bmp": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
    "webp": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
    "tiff": lambda path, rgb: cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
}


@pytest.fixture
def photo_folder(tmp_path, small_dataset) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (kind, write) in enumerate(IMAGE_WRITERS.items()):
        suffix = kind.split("-")[0]
        assert write(folder / f"{i}-{kind}.{suffix}", small_dataset.test.images[i])
    big = cv2.resize(small_dataset.test.images[9], (4000, 3000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / "huge.jpg"), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "tiny.png"), small_dataset.test.images[10][:2, :3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    jpeg = (folder / "0-jpg.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:40])
    (folder / "text.jpg").write_text("this is a text file with an image suffix")
    return folder


BAD_FILES = {"empty.jpg", "corrupt.png", "truncated.jpg", "text.jpg"}


def test_cli_classifies_every_readable_file_and_reports_the_rest(photo_folder, tflite_int8, capsys):
    code = main([str(photo_folder), "--model", str(tflite_int8), "--json", "--top-k", "3"])
    records, err = _records(capsys)
    assert code == 1, "a failed input must make the exit non-zero"
    by_name = {Path(r["source"]).name: r for r in records}
    assert len(records) == len(IMAGE_WRITERS) + 2 + len(BAD_FILES)
    for name in BAD_FILES:
        assert set(by_name[name]) == {"source", "error"} and by_name[name]["error"]
    for name, record in by_name.items():
        if name in BAD_FILES:
            continue
        assert {"source", "label", "class_id", "score", "top_k", "latency_ms"} <= set(record)
        assert "frame" not in record
        assert record["label"] == CLASS_NAMES[record["class_id"]] and len(record["top_k"]) == 3
        assert record["top_k"][0]["score"] == record["score"]
    assert "Traceback" not in err and "images classified" in err


def test_cli_text_output_and_one_line_errors(photo_folder, tflite_int8, capsys):
    code = main([str(photo_folder / "0-jpg.jpg"), str(photo_folder / "empty.jpg"), "--model", str(tflite_int8)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith(f"{photo_folder / '0-jpg.jpg'}: ")
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert errors == [f"cifar-run: error: {photo_folder / 'empty.jpg'}: empty file"]


def test_cli_video_reports_every_frame_with_its_number(clip, tflite_int8, capsys):
    assert main(["--video", str(clip), "--model", str(tflite_int8), "--json"]) == 0
    records, err = _records(capsys)
    assert [r["frame"] for r in records] == list(range(24))
    assert "24 of 24 frames classified" in err and "inference" in err
    assert main(["--video", str(clip), "--model", str(tflite_int8), "--json", "--every", "5", "--max-frames", "12"]) == 0
    records, _ = _records(capsys)
    assert [r["frame"] for r in records] == [0, 5, 10]


def test_cli_video_path_matches_the_raw_images(clip, tflite_int8, small_dataset, capsys):
    main(["--video", str(clip), "--model", str(tflite_int8), "--json"])
    records, _ = _records(capsys)
    raw = Classifier(tflite_int8).invoke(small_dataset.test.images[:24]).argmax(1)
    assert np.mean([r["class_id"] for r in records] == raw) >= 0.85


def test_cli_save_writes_the_annotated_video(clip, tflite_int8, tmp_path, capsys):
    out = tmp_path / "annotated.mp4"
    assert main(["--video", str(clip), "--model", str(tflite_int8), "--save", str(out), "--every", "3"]) == 0
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    ok, frame = capture.read()
    assert ok and frame.shape == (480, 640, 3)
    capture.release()
    assert [p.name for p in tmp_path.iterdir()] == ["annotated.mp4"], "no temporary file may be left behind"


def test_cli_camera_stand_in_stops_at_max_frames_or_errors_when_it_ends(clip, tflite_int8, capsys):
    assert main(["--camera", str(clip), "--model", str(tflite_int8), "--json", "--max-frames", "3"]) == 0
    records, _ = _records(capsys)
    assert len(records) == 3 and all(r["source"].startswith("camera:") for r in records)
    assert main(["--camera", str(clip), "--model", str(tflite_int8)]) == 2
    err = capsys.readouterr().err
    assert "frames classified" in err, "the summary still comes"
    assert err.strip().splitlines()[-1].startswith("cifar-run: error: --camera") and "Traceback" not in err


def test_cli_ctrl_c_stops_cleanly_with_the_summary(monkeypatch, tflite_int8, small_dataset, capsys):
    class Interrupted(FrameSource):
        is_stream = True

        def __iter__(self):
            for index in range(3):
                yield Frame("fake", index, small_dataset.test.images[index], 1.0)
            raise KeyboardInterrupt

    monkeypatch.setattr(run_cli, "_open_source", lambda args: Interrupted())
    assert main(["--camera", "--model", str(tflite_int8)]) == 130
    err = capsys.readouterr().err
    assert "3 of 3 frames classified" in err and "interrupted" in err


def test_cli_info_names_the_packaged_default(capsys):
    assert main(["--info", "--json"]) == 0
    (info,), _ = _records(capsys)
    assert info["model"] == DEFAULT_MODEL == "edge" and info["packaged"] and info["format"] == "tflite-int8"
    assert info["class_names"] == list(CLASS_NAMES) and info["input"]["dtype"] == "uint8"
    assert Path(info["path"]).is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "nothing to classify"),
        (["a.jpg", "--video", "b.mp4"], "one kind per run"),
        (["a.jpg", "--save", "out.mp4"], "--save writes a video"),
        (["--video", "b.mp4", "--save", "out.gif"], ".mp4 or .avi"),
        (["a.jpg", "--top-k", "11"], "only 10 classes"),
        (["a.jpg", "--every", "0"], "positive whole number"),
        (["--video", "missing.mp4"], "no such file"),
        (["a.jpg", "--model", "missing.tflite"], "no such model file"),
        (["a.jpg", "--model", "nonsense"], "packaged"),
        (["--camera", "/dev/video-does-not-exist"], "cannot be opened"),
        (["a.jpg", "--show"], "--show: "),
    ],
)
def test_cli_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert message in lines[-1] and len([line for line in lines if "error" in line]) == 1 and "Traceback" not in err


def _exit_code(argv) -> int:
    """main()'s return value, or the code of argparse's SystemExit for usage errors."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_corrupt_model_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx" * 100)
    assert main(["x.jpg", "--model", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a loadable ONNX model" in err
