"""Native log noise: quiet by default, every other line kept, all of it back with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys

from cifar_edge.runtime import quiet
from conftest import REPO

SAMPLE = REPO / "samples" / "images" / "00-airplane.jpg"
CLIP = REPO / "samples" / "clip.mp4"


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in quiet.ENVIRONMENT}
    return subprocess.run([sys.executable, "-m", "cifar_edge.runtime.cli", *argv], capture_output=True, text=True, env=env)


def test_cifar_run_prints_only_its_own_lines_unless_verbose():
    quiet_run = _run(str(SAMPLE))
    assert quiet_run.returncode == 0, quiet_run.stderr
    assert all(line.startswith("cifar-run: ") for line in quiet_run.stderr.splitlines()), quiet_run.stderr
    verbose_run = _run(str(SAMPLE), "--verbose")
    assert "XNNPACK delegate" in verbose_run.stderr


def test_ffmpeg_says_nothing_before_our_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(CLIP.read_bytes()[:2000])  # the header's start, no moov atom
    result = _run("--video", str(broken))
    assert result.returncode == 2
    assert all(line.startswith("cifar-run: ") for line in result.stderr.splitlines()), result.stderr
    assert result.stderr.splitlines()[-1] == f"cifar-run: error: --video {broken}: cannot be opened as a video"
    assert "moov atom not found" in _run("--video", str(broken), "--verbose").stderr


def test_importing_tensorflow_after_parsing_prints_nothing():
    code = ("from cifar_edge.runtime.errors import ArgumentParser\n"
            "ArgumentParser(prog='x').parse_args([])\n"
            "import tensorflow as tf\n"
            "tf.config.list_physical_devices()\n"  # where a CUDA build calls cuInit
            "print(int(tf.constant(2) + 1))\n")
    env = {k: v for k, v in os.environ.items() if k not in quiet.ENVIRONMENT}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout == "3\n"
    assert result.stderr == ""


def test_the_filter_drops_known_notices_and_keeps_everything_else(capfd):
    quiet.configure(verbose=False)
    with quiet.native_notices_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 something.cc:12] a real failure\n")
        print("cifar-run: error: our own message", file=sys.stderr)
    err = capfd.readouterr().err
    assert "XNNPACK" not in err
    assert "a real failure" in err and "our own message" in err
