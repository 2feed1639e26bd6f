"""tools/pi_compare.py: the host-against-emulated-Pi comparison that `make pi-check` passes or fails on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "pi_compare.py"
spec = importlib.util.spec_from_file_location("pi_compare", TOOL)
pi_compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pi_compare)


def _record(source, class_id, scores, frame=None):
    top_k = [{"label": f"c{c}", "class_id": c, "score": s} for c, s in sorted(scores.items(), key=lambda kv: -kv[1])]
    record = {"source": source, "label": f"c{class_id}", "class_id": class_id, "score": max(scores.values()), "top_k": top_k}
    if frame is not None:
        record["frame"] = frame
    return record


def _write(folder: Path, records, info):
    folder.mkdir()
    (folder / "m-e-images.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "m-e-info.json").write_text(json.dumps(info))


INFO = {"model": "edge", "path": "/host/x.tflite", "engine_version": "litert 1", "format": "tflite-int8", "class_names": ["a"]}


@pytest.fixture
def host(tmp_path):
    records = [_record("a.jpg", 0, {0: 0.7, 1: 0.3}), _record("clip.mp4", 1, {0: 0.4, 1: 0.6}, frame=0)]
    _write(tmp_path / "host", records, INFO)
    return tmp_path / "host", records


def test_identical_runs_pass_and_path_and_version_are_ignored(host, tmp_path):
    host_dir, records = host
    _write(tmp_path / "pi", records, {**INFO, "path": "/opt/venv/x.tflite", "engine_version": "litert 1 aarch64"})
    assert pi_compare.main([str(host_dir), str(tmp_path / "pi")]) == 0
    problems, stats = pi_compare.compare(host_dir, tmp_path / "pi", 1e-3)
    assert problems == [] and stats["records"] == 2 and stats["commands"] == 2


def test_small_differences_pass_within_the_tolerance_and_fail_beyond(host, tmp_path):
    host_dir, records = host
    records = [_record("a.jpg", 0, {0: 0.7005, 1: 0.2995}), records[1]]
    _write(tmp_path / "pi", records, INFO)
    assert pi_compare.compare(host_dir, tmp_path / "pi", 1e-3)[0] == []
    problems, _ = pi_compare.compare(host_dir, tmp_path / "pi", 1e-4)
    assert len(problems) == 1 and "a.jpg" in problems[0] and "0.000500" in problems[0]


def test_video_frames_have_their_own_tolerance(host, tmp_path):
    host_dir, records = host
    _write(tmp_path / "pi", [records[0], _record("clip.mp4", 1, {0: 0.45, 1: 0.55}, frame=0)], INFO)
    assert pi_compare.compare(host_dir, tmp_path / "pi", 1e-3, 0.1)[0] == []
    problems, stats = pi_compare.compare(host_dir, tmp_path / "pi", 1, 0.01)
    assert len(problems) == 1 and "frame 0" in problems[0] and stats["max_video_diff"] == pytest.approx(0.05)


def test_a_different_top1_fails(host, tmp_path, capsys):
    host_dir, records = host
    _write(tmp_path / "pi", [records[0], _record("clip.mp4", 0, {0: 0.6, 1: 0.4}, frame=0)], INFO)
    assert pi_compare.main([str(host_dir), str(tmp_path / "pi"), "--tolerance", "1"]) == 1
    assert "clip.mp4 frame 0: top-1 c1 on the host, c0 emulated" in capsys.readouterr().out


def test_missing_records_commands_and_info_differences_fail(host, tmp_path):
    host_dir, records = host
    _write(tmp_path / "pi", records[:1], {**INFO, "format": "onnx-int8"})
    (tmp_path / "pi" / "extra-info.json").write_text(json.dumps(INFO))
    problems, _ = pi_compare.compare(host_dir, tmp_path / "pi", 1e-3)
    text = "\n".join(problems)
    assert "different commands" in text
    assert "2 records on the host, 1 emulated" in text
    assert "format is 'tflite-int8' on the host, 'onnx-int8' emulated" in text


def test_a_missing_folder_is_one_line_exit_2(tmp_path, capsys):
    assert pi_compare.main([str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("no such folder")


def _unknown(record):
    return {**record, "label": "unknown", "class_id": None}


def test_answered_on_one_side_and_unknown_on_the_other_passes_only_within_the_tolerance(host, tmp_path, capsys):
    # A calibrated model's threshold can fall between the host's and the emulated score of the same best class.
    host_dir, records = host
    _write(tmp_path / "pi", [records[0], _unknown(_record("clip.mp4", 1, {0: 0.42, 1: 0.58}, frame=0))], INFO)
    problems, stats = pi_compare.compare(host_dir, tmp_path / "pi", 1e-3, 0.05)
    assert problems == [] and stats["threshold_splits"] == 1
    assert pi_compare.main([str(host_dir), str(tmp_path / "pi")]) == 0
    assert "1 answered on one side and unknown on the other" in capsys.readouterr().out
    problems, _ = pi_compare.compare(host_dir, tmp_path / "pi", 1e-3, 0.01)
    assert len(problems) == 1 and "probabilities differ" in problems[0]


def test_unknown_on_one_side_with_another_best_class_fails(host, tmp_path):
    host_dir, records = host
    _write(tmp_path / "pi", [records[0], _unknown(_record("clip.mp4", 0, {0: 0.55, 1: 0.45}, frame=0))], INFO)
    problems, _ = pi_compare.compare(host_dir, tmp_path / "pi", 1, 1)
    assert problems == ["m-e-images.json: clip.mp4 frame 0: top-1 c1 on the host, c0 emulated"]
