"""The runtime benchmark and the clip maker, on the tiny model and a handful of images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cifar_edge.benchmarks import runtime_speed
from cifar_edge.benchmarks.clips import frame_around, make_samples, write_clip
from cifar_edge.benchmarks.runtime_speed import calibration_cost, classifier_overhead, measure, video_fps_side_by_side, without_calibration
from cifar_edge.runtime import Classifier, data
from cifar_edge.runtime.calibration import Calibration
from conftest import export_file


def test_frame_around_puts_the_image_back_where_crop_finds_it(small_dataset):
    rgb = small_dataset.test.images[0]
    frame = cv2.cvtColor(frame_around(rgb), cv2.COLOR_BGR2RGB)
    assert frame.shape == (480, 640, 3) and frame[:, :80].max() == 0
    back = cv2.resize(frame[:, 80:560], (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(back.astype(int) - rgb).mean() < 4


def test_clip_holds_each_image_for_the_asked_frames(small_dataset, tmp_path):
    path = write_clip(small_dataset.test.images[:3], tmp_path / "c.avi", frames_per_image=2)
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()


def test_samples_are_one_photo_per_class_and_a_clip(image_tree, tmp_path):
    written = make_samples(str(image_tree), tmp_path)
    assert len([p for p in written if p.suffix == ".jpg"]) == 10 and written[-1].name == "clip.mp4"


def test_samples_read_the_data_from_the_environment_without_a_download(image_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(image_tree))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download although CIFAR10_DATA is set")

    monkeypatch.setattr(data, "download_official", no_download)
    written = make_samples(None, tmp_path)
    assert len([p for p in written if p.suffix == ".jpg"]) == 10


def test_runtime_speed_reads_the_data_from_the_environment(image_tree, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(image_tree))
    asked = []

    def load(source):
        asked.append(source)
        raise KeyboardInterrupt  # stop before any measuring: only the source matters here

    monkeypatch.setattr(runtime_speed, "load_cifar10", load)
    with pytest.raises(KeyboardInterrupt):
        measure(None, None, images=20)
    assert asked == [str(image_tree)]


def test_measure_reports_overhead_video_and_photo_paths(tiny_export, image_tree):
    model = export_file(tiny_export, "tflite-int8")
    result = measure(str(model), str(image_tree), images=20)
    assert result["images"] == 20
    for path in ("video", "photos"):
        assert result[path]["classified"] == 20 and 0 <= result[path]["accuracy"] <= 1
        # Upscaling into a 640x480 frame and back must not change what the model sees much.
        assert result[path]["agreement_with_raw"] >= 0.8, result[path]
    assert result["overhead"]["ratio"] > 0


def test_overhead_compares_the_same_model(tiny_export, small_dataset):
    classifier = Classifier(export_file(tiny_export, "tflite-int8"), threads=1)
    result = classifier_overhead(classifier, small_dataset.test.images[0], calls=200, rounds=4)
    assert result["calls_each"] == 200 and result["bare_litert_ms"] > 0 and result["classify_ms"] > 0


def test_calibration_cost_compares_the_file_with_and_without_its_calibration(tiny_export, small_dataset):
    calibrated = Classifier(export_file(tiny_export, "tflite-int8"), threads=1)
    calibrated.calibration, calibrated.min_score = Calibration(0.5, 0.99, 0.98, 100), 0.99
    plain = without_calibration(calibrated)
    assert plain.calibration is None and plain.min_score == 0 and plain.model.path == calibrated.model.path
    image = small_dataset.test.images[0]
    raw = plain.classify(image)[0]
    assert calibrated.classify(image)[0].score != raw.score, "the calibrated side rescales the scores"
    result = calibration_cost(calibrated, plain, image, calls=200, rounds=4)
    assert result["calls_each"] == 200 and result["plain_ms"] > 0 and result["calibrated_ms"] > 0
    weighted = Classifier(export_file(tiny_export, "tflite-int8"), threads=1, zoom="1:3,0.75:1")
    assert without_calibration(weighted).zoom == weighted.zoom, "the plain side classifies the same views, weights included"


def test_video_fps_side_by_side_alternates_passes_and_reads_the_whole_clip(tiny_export, small_dataset, tmp_path, monkeypatch):
    calibrated = Classifier(export_file(tiny_export, "tflite-int8"), threads=1)
    calibrated.calibration, calibrated.min_score = Calibration(0.5, 0.99, 0.98, 100), 0.99
    plain = without_calibration(calibrated)
    clip = write_clip(small_dataset.test.images[:12], tmp_path / "clip.mp4")
    order, real = [], runtime_speed.classify_frames

    def counted(classifier, source, **kwargs):
        order.append("calibrated" if classifier is calibrated else "plain")
        stats = real(classifier, source, **kwargs)
        assert stats.classified == 12, "every frame of the clip, each pass"
        return stats

    monkeypatch.setattr(runtime_speed, "classify_frames", counted)
    result = video_fps_side_by_side({"calibrated": calibrated, "plain": plain}, clip, passes=3)
    assert order == ["calibrated", "plain", "plain", "calibrated", "calibrated", "plain"]
    assert result["passes"] == 3 and result["calibrated_fps"] > 0 and result["plain_fps"] > 0
    assert result["ratio"] == pytest.approx(result["calibrated_fps"] / result["plain_fps"], rel=0.01)
