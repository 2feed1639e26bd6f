"""Careless and hostile uses of the CLIs: one line, the right exit, nothing half done, nothing noisy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cifar_edge.runtime import cli as run_cli
from cifar_edge.runtime import data, sources
from cifar_edge.runtime.cli import main
from conftest import REPO, cifar_run_exit

SAMPLES = REPO / "samples" / "images"
CLIP = REPO / "samples" / "clip.mp4"


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_save_into_a_missing_folder_fails_before_any_work(tmp_path, capsys):
    target = tmp_path / "missing" / "dir" / "out.mp4"
    # The model does not exist either: the --save check must come first, before anything loads.
    assert cifar_run_exit(["--video", str(CLIP), "--save", str(target), "--model", str(tmp_path / "nope.tflite")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"cifar-run: error: --save {target}: folder {target.parent} does not exist"
    assert not (tmp_path / "missing").exists()


def test_save_onto_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "out.mp4").mkdir()
    assert cifar_run_exit(["--video", str(CLIP), "--save", str(tmp_path / "out.mp4")]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)


def test_show_without_a_display_fails_before_opening_a_window(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(run_cli, "installed_opencv_wheels", lambda: ["opencv-python"])
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: pytest.fail("a window was opened without a display"), raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert cifar_run_exit([str(SAMPLES), "--show"]) == 2
    assert "no display here" in _one_error_line(capsys.readouterr().err)


def test_show_with_two_opencv_wheels_says_to_keep_one(monkeypatch, capsys):
    monkeypatch.setattr(run_cli, "installed_opencv_wheels", lambda: ["opencv-python", "opencv-python-headless"])
    assert cifar_run_exit([str(SAMPLES), "--show"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "pip uninstall -y opencv-python opencv-python-headless" in line and "'opencv-python>=4.10,<5'" in line


def test_show_with_the_headless_wheel_advises_one_gui_wheel_below_5(monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(run_cli, "installed_opencv_wheels", lambda: ["opencv-python-headless"])

    def no_gui(*args):
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(cv2, "namedWindow", no_gui, raising=False)
    assert cifar_run_exit([str(SAMPLES), "--show"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "pip uninstall -y opencv-python-headless && pip install 'opencv-python>=4.10,<5'" in line


def test_a_closed_pipe_ends_quietly():
    # 2,000 records, far more than a pipe holds, so cifar-run is still writing when the reader leaves.
    argv = [sys.executable, "-m", "cifar_edge.runtime.cli", "--json", *[str(SAMPLES)] * 200]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    process.stdout.close()  # what `| head -1` does
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert first.startswith('{"source"')
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


def test_one_suffix_list_and_folder_scans_find_gif(tmp_path, capsys):
    assert data.IMAGE_SUFFIXES is sources.IMAGE_SUFFIXES and ".gif" in data.IMAGE_SUFFIXES
    assert cv2.imwrite(str(tmp_path / "a.gif"), np.full((40, 40, 3), 90, np.uint8))
    assert main([str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"source": "' + str(tmp_path / "a.gif") in out


def test_the_data_loader_reads_gif_files_of_a_tree(tmp_path):
    from cifar_edge.runtime.labels import CLASS_NAMES

    for split in ("train", "test"):
        for name in CLASS_NAMES:
            (tmp_path / split / name).mkdir(parents=True)
            assert cv2.imwrite(str(tmp_path / split / name / "0.gif"), np.full((32, 32, 3), 50, np.uint8))
    loaded = data.load_cifar10(tmp_path)
    assert len(loaded.train) == len(loaded.test) == len(CLASS_NAMES)


def test_summary_says_images_and_gives_no_rate_when_nothing_was_classified(tmp_path, capsys):
    assert main([str(tmp_path / "missing.jpg")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("cifar-run: 0 of 1 images classified, 1 failed, in ")
    assert "FPS" not in err[-1] and "median" not in err[-1]
    assert main([str(SAMPLES / "00-airplane.jpg")]) == 0
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("cifar-run: 1 of 1 images classified in ") and "median ms: read" in line and "FPS" not in line


def _parsers():
    from cifar_edge.benchmarks import cli as bench_cli
    from cifar_edge.export import cli as export_cli
    from cifar_edge.train import cli as train_cli
    from cifar_edge.train import tune_cli

    return {"cifar-run": run_cli.build_parser(), "cifar-train": train_cli.build_parser(), "cifar-export": export_cli.build_parser(), "cifar-tune": tune_cli.build_parser(),
            "cifar-bench": bench_cli.build_parser(), "cifar-bench report": bench_cli.build_report_parser()}


@pytest.mark.parametrize("prog", ["cifar-run", "cifar-train", "cifar-export", "cifar-tune", "cifar-bench", "cifar-bench report"])
def test_every_value_flag_has_a_real_metavar(prog):
    parser = _parsers()[prog]
    placeholders = [action.option_strings[-1] for action in parser._actions
                    if action.option_strings and action.nargs != 0 and action.choices is None and action.metavar is None]
    assert not placeholders, f"{prog}: argparse's DEST placeholders for {placeholders}"


def test_camera_metavar_names_csi():
    assert "--camera [INDEX|DEVICE|URL|csi]" in run_cli.build_parser().format_help()


def test_info_prints_no_python_reprs(capsys):
    assert main(["--info"]) == 0
    out = capsys.readouterr().out
    for token in ("{", "}", "[", "]", "'", "None", "True", "False", "Path("):
        assert token not in out, (token, out)
    assert "class_names: airplane, automobile" in out


def test_every_cli_has_verbose():
    for prog, parser in _parsers().items():
        assert "--verbose" in parser.format_help(), prog


def test_folders_scanned_by_cifar_run_skip_nothing_the_decoder_reads(tmp_path):
    for suffix in sources.IMAGE_SUFFIXES:
        Path(tmp_path / f"x{suffix}").write_bytes(b"")
    assert len(sources.expand_inputs([str(tmp_path)])) == len(sources.IMAGE_SUFFIXES)


def _module_clis() -> list[str]:
    """The `python -m` tools whose --help description is their docstring's first line, found in the source."""
    return sorted(".".join(("cifar_edge", *path.relative_to(REPO).with_suffix("").parts))
                  for part in ("train", "export", "runtime", "benchmarks") for path in (REPO / part).glob("*.py")
                  if "__doc__.splitlines()[0]" in path.read_text())


@pytest.mark.parametrize("module", _module_clis())
def test_module_cli_descriptions_are_whole_sentences(module):
    # argparse shows only the first docstring line: a sentence wrapped onto the next line is cut mid-phrase.
    import importlib

    first = importlib.import_module(module).__doc__.splitlines()[0]
    assert first.endswith("."), f"{module}: --help shows the cut-off line {first!r}"


def test_module_clis_are_found():
    assert "cifar_edge.benchmarks.runtime_speed" in _module_clis() and len(_module_clis()) >= 5
