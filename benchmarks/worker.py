"""Measuring one candidate: its open engine and timed slices (`_RowState`), in this process
(`measure`) or in a child process of its own driven over JSON lines (`RowProcess`, `_serve`)."""

from __future__ import annotations

import gc
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from cifar_edge.benchmarks.records import COVERAGE_TARGETS, BenchOptions, Candidate, Row
from cifar_edge.runtime.calibration import Calibration, expected_calibration_error, risk_coverage, risk_coverage_curve
from cifar_edge.runtime.data import Split
from cifar_edge.runtime.engines import open_engine, probe_contract
from cifar_edge.runtime.timing import MIN_RUNS, latency_stats, time_runs


class _PeakMemory:
    """Peak resident memory growth over a block, from Linux's VmHWM (reset via clear_refs).

    The figure is what loading and running the model added on top of the process as it was
    (Python, numpy, the test images). Where /proc cannot do this (macOS, a locked-down
    container) it reports None.
    """

    def __enter__(self):
        gc.collect()
        self.baseline_kb = _status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.baseline_kb = None
        self.peak_mb = None
        return self

    def __exit__(self, *exc):
        if self.baseline_kb is not None:
            peak = _status_kb("VmHWM")
            self.peak_mb = round(max(0, peak - self.baseline_kb) / 1024, 2) if peak is not None else None


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class _RowState:
    """One candidate's open engine and everything measured on it so far."""

    def __init__(self, candidate: Candidate, split: Split, options: BenchOptions):
        self.candidate, self.split, self.options = candidate, split, options
        self.row = Row(candidate.format, candidate.engine, str(candidate.path), reference=candidate.reference, model=candidate.model,
                       export_accuracy=candidate.export_accuracy if candidate.export_images == len(split) else None)
        self.engine = None
        self.timings: dict[int, list[float]] = {}
        self.memory = _PeakMemory()

    def open(self, with_accuracy: bool = True) -> Row:
        """Load the file and measure accuracy; a failure becomes the row's status and reason."""
        try:
            self.memory.__enter__()  # first, so finish() can always close it
            self.row.size_bytes = self.candidate.path.stat().st_size
            start = time.perf_counter()
            self.engine = open_engine(self.candidate.path, self.candidate.engine, self.options.threads, check=False)
            self.row.load_ms = round((time.perf_counter() - start) * 1000, 2)
            probe_contract(self.engine)  # after the timer: load_ms stays the load alone
            self.row.engine_version = self.engine.version
            if with_accuracy:
                probabilities = self.engine.predict(self.split.images, batch_size=max(self.options.batch_sizes))
                self.row.images = len(self.split)
                self.row.accuracy = float(np.mean(probabilities.argmax(1) == self.split.labels))
                self._score_calibration(probabilities)
        except Exception as error:  # noqa: BLE001 - a row that cannot load or run is reported, and the others still run
            self.fail(error)
        return self.row

    def _score_calibration(self, probabilities: np.ndarray) -> None:
        labels = self.split.labels
        self.row.ece = expected_calibration_error(probabilities, labels)
        if self.candidate.calibration is not None:
            probabilities = Calibration.from_dict(self.candidate.calibration).apply(probabilities)
            self.row.ece_calibrated = expected_calibration_error(probabilities, labels)
        self.row.coverage = risk_coverage(probabilities, labels, COVERAGE_TARGETS)
        self.row.risk_coverage = risk_coverage_curve(probabilities, labels)

    def time_slice(self, batch_size: int, seconds: float, warmup: int, min_runs: int) -> None:
        batch = self.split.images[np.arange(batch_size) % len(self.split)]
        times = time_runs(lambda: self.engine.predict(batch, batch_size=batch_size), warmup, seconds, min_runs)
        self.timings.setdefault(batch_size, []).extend(times)

    def fail(self, error: BaseException | str) -> None:
        self.row.status = "failed"
        self.row.error = error if isinstance(error, str) else f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"

    def finish(self) -> Row:
        """The row with latency and throughput from every slice, and the peak memory."""
        self.memory.__exit__(None, None, None)
        self.row.peak_mb = self.memory.peak_mb
        return _with_timings(self.row, self.timings)


def _with_timings(row: Row, timings: dict[int, list[float]]) -> Row:
    if row.status != "ok" or 1 not in timings:
        return row
    latency = latency_stats(timings[1])
    throughput = {str(b): round(b / float(np.median(t)), 1) for b, t in sorted(timings.items())}
    return replace(row, latency_ms=latency, fps=round(1000 / latency["p50"], 1), throughput=throughput)


def schedule(options: BenchOptions) -> list[tuple[int, int, int, float]]:
    """The timed slices as (batch size, warm-up calls, minimum runs, seconds), in the order they run.

    Batch 1 always comes first (it gives the latency percentiles, and batch-1 throughput
    when asked for). Every batch size gets `min_time` seconds in `slices` slices; the first
    slice warms up fully, later ones with two calls, to refill caches the other rows emptied.
    """
    slices = max(1, round(options.min_time / options.slice_time))
    sizes = [1, *(b for b in options.batch_sizes if b != 1)]
    per_slice_runs, seconds = -(-MIN_RUNS // slices), options.min_time / slices
    return [(b, options.warmup if index == 0 else min(2, options.warmup), per_slice_runs, seconds)
            for index in range(slices) for b in sizes]


def measure(candidate: Candidate, split: Split, options: BenchOptions, with_accuracy: bool = True) -> Row:
    """Measure one candidate in this process, its slices back to back; failures become a failed row."""
    state = _RowState(candidate, split, options)
    state.open(with_accuracy)
    if state.row.status == "ok":
        try:
            for batch_size, warmup, min_runs, seconds in schedule(options):
                state.time_slice(batch_size, seconds, warmup, min_runs)
        except Exception as error:  # noqa: BLE001 - as in open(): the row records why
            state.fail(error)
    return state.finish()


class WorkerGone(Exception):
    """A row's process died, hung or answered nonsense."""


class RowProcess:
    """A candidate measured in its own Python process, driven one request at a time.

    Own process: its peak memory is its own, engines' thread pools do not pile up, and a
    file that crashes its engine (a segfault in native code) fails its row, not the run.
    Kept alive across slices, so the parent can interleave rows without reloading them.
    """

    def __init__(self, candidate: Candidate, split_file: Path, options: BenchOptions, scratch: Path, index: int):
        self.candidate = candidate
        # stderr to a file: TensorFlow alone writes enough to fill a pipe nobody reads.
        self.stderr = open(scratch / f"row{index}.stderr", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "cifar_edge.benchmarks.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.request = {"candidate": {**asdict(candidate), "path": str(candidate.path)}, "split": str(split_file),
                        "options": {**asdict(options), "batch_sizes": list(options.batch_sizes), "engines": list(options.engines)}}

    def ask(self, message: dict, timeout_s: float) -> dict:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerGone(self._death()) from None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            self.process.kill()
            raise WorkerGone(f"no answer within {timeout_s:g} s")
        line = self.process.stdout.readline()
        if not line:
            raise WorkerGone(self._death())
        return json.loads(line)

    def _death(self) -> str:
        code = self.process.wait(timeout=30)
        self.stderr.seek(0)
        tail = " ".join(self.stderr.read().strip().splitlines()[-1:])[:300]
        reason = f"signal {-code}" if code < 0 else f"exit {code}"
        return f"engine process died ({reason}) {tail}".strip()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.stderr.close()


def _serve() -> None:
    """The child side of `RowProcess`: JSON requests on stdin, one JSON answer per line on stdout."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # an engine's own prints (native code included) go to stderr, never into the answers
    request = json.loads(sys.stdin.readline())
    candidate = Candidate(**{**request["candidate"], "path": Path(request["candidate"]["path"])})
    options = BenchOptions(**{**request["options"], "batch_sizes": tuple(request["options"]["batch_sizes"]),
                              "engines": tuple(request["options"]["engines"])})
    with np.load(request["split"]) as arrays:
        split = Split(arrays["images"], arrays["labels"])
    state = _RowState(candidate, split, options)
    answers.write(json.dumps(asdict(state.open())) + "\n")
    for line in sys.stdin:
        message = json.loads(line)
        if "batch_size" not in message:
            break
        try:
            state.time_slice(message["batch_size"], message["seconds"], message["warmup"], message["min_runs"])
            answers.write(json.dumps({}) + "\n")
        except Exception as error:  # noqa: BLE001 - reported as the row's failure by the parent
            state.fail(error)
            answers.write(json.dumps({"error": state.row.error}) + "\n")
    answers.write(json.dumps(asdict(state.finish())) + "\n")


if __name__ == "__main__":
    _serve()
