"""Accuracy against latency for every model file, on the machine this runs on.

Library half of `cifar-bench`: find the files to measure, measure each (accuracy, batch-1
latency percentiles, batch throughput, load time, peak memory), and write the results as
JSON, CSV, a Markdown table and a plot. Only the runtime's engines and TF-free data loading
are used, so it runs on a Raspberry Pi with the `runtime` extra; the Keras reference row is
added when Keras is installed.
"""

from __future__ import annotations

import csv
import gc
import importlib.util
import io
import json
import os
import platform
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from cifar_edge.runtime.calibration import TARGET_ACCURACY, Calibration, coverage_key, expected_calibration_error, risk_coverage
from cifar_edge.runtime.classifier import resolve_model
from cifar_edge.runtime.data import Split
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import atomic_path, is_temporary, write_json, write_text
from cifar_edge.runtime.formats import engine_for

SCHEMA = "cifar-bench/1"
BENCH_ENGINES = ("litert", "onnxruntime", "keras")
MODEL_SUFFIXES = (".tflite", ".onnx", ".keras")
#: Slow outliers (a context switch, a page fault) are left out of mean and std beyond this many robust sigmas.
OUTLIER_SIGMAS = 5.0
PLOT_NAME = "accuracy_vs_latency.png"
# Accepted accuracies of the risk-coverage table: the coverage at each is the share of images answered.
COVERAGE_TARGETS = (0.95, 0.98, 0.99)
# The table shows the coverage at the runtime's default target.
TABLE_COVERAGE = coverage_key(TARGET_ACCURACY)
TABLE_COLUMNS = ("Format", "Status", "Size", "Accuracy", "ECE", f"Cov@{TABLE_COVERAGE}", "p50 ms", "p90 ms", "FPS", "Peak MB")


class BenchError(CifarEdgeError):
    """Bad benchmark input: a missing path, an empty folder, an unreadable results file."""


@dataclass(frozen=True)
class BenchOptions:
    """What `cifar-bench` measures and how long it spends on it."""

    limit: int | None = None
    """Test images for accuracy, class-balanced with `seed`; None for all 10,000."""
    threads: int | None = None
    """Engine threads; None lets each engine choose."""
    batch_sizes: tuple[int, ...] = (1, 32)
    """Batch sizes for throughput; latency percentiles are always at batch 1."""
    min_time: float = 2.0
    """Seconds of timed runs per batch size (and at least `MIN_RUNS` runs)."""
    warmup: int = 10
    """Untimed runs before each timing, so first-call allocation and caching do not count."""
    engines: tuple[str, ...] = BENCH_ENGINES
    """Which engines get rows."""
    device_name: str | None = None
    """A label for this machine in merged reports (default: the host name)."""
    seed: int = 0
    """Seed of the class-balanced test subset; 0 picks the same images as `cifar-export` validation."""
    slice_time: float = 0.25
    """Timing is cut into slices this long, cycled over all rows (in alternating order), so a
    slow spell of a shared machine is spread over every row instead of landing on one."""


MIN_RUNS = 10


@dataclass
class Candidate:
    """One file and engine to measure."""

    path: Path
    engine: str
    format: str
    """The format table's name when a manifest says, else `tflite`/`onnx`/`keras`."""
    reference: bool = False
    """The Keras model an export folder came from."""
    export_accuracy: float | None = None
    export_images: int | None = None
    """Validation figures from the export manifest, to compare on the same images."""
    model: str = ""
    """The model's name (the manifest's, else the file name up to its first dot), so rows of
    several models in one table can be told apart."""
    calibration: dict | None = None
    """The manifest row's calibration, when the file has one: its scores are then measured calibrated."""

    def __post_init__(self):
        if not self.model:
            self.model = Path(self.path).name.split(".")[0]


@dataclass
class Row:
    """One measured file and engine: the unit of every output."""

    format: str
    engine: str
    file: str
    status: str = "ok"
    error: str | None = None
    reference: bool = False
    model: str = ""
    engine_version: str | None = None
    size_bytes: int | None = None
    load_ms: float | None = None
    images: int | None = None
    accuracy: float | None = None
    export_accuracy: float | None = None
    ece: float | None = None
    """Expected calibration error (15 bins) of the file's own scores."""
    ece_calibrated: float | None = None
    """The same with the manifest's calibration applied; None without one."""
    coverage: dict | None = None
    """Accepted accuracy -> share of images answered at the threshold that reaches it (calibrated scores when there are)."""
    latency_ms: dict | None = None
    fps: float | None = None
    throughput: dict = field(default_factory=dict)
    peak_mb: float | None = None


def find_candidates(inputs: list[str], engines: tuple[str, ...] = BENCH_ENGINES) -> list[Candidate]:
    """Model files and export folders as rows to measure, in the order given."""
    candidates: list[Candidate] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_file():
            if path.suffix.lower() not in MODEL_SUFFIXES:
                raise BenchError(f"{given}: not a model file (expected {', '.join(MODEL_SUFFIXES)})")
            calibration = resolve_model(path).calibration
            candidates.append(Candidate(path, engine_for(path), path.suffix.lower().lstrip("."), reference=path.suffix == ".keras",
                                        calibration=calibration.as_dict() if calibration else None))
        elif path.is_dir():
            found = _from_folder(path)
            if not found:
                raise BenchError(f"{given}: folder holds no manifest.json and no {', '.join(MODEL_SUFFIXES)} files")
            candidates.extend(found)
        else:
            raise BenchError(f"{given}: no such file or folder")
    chosen = [c for c in candidates if c.engine in engines]
    if not chosen:
        raise BenchError(f"no model files for engine {', '.join(engines)} in {', '.join(inputs)}")
    return chosen


def _from_folder(folder: Path) -> list[Candidate]:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return [Candidate(p, engine_for(p), p.suffix.lstrip("."), reference=p.suffix == ".keras")
                for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not is_temporary(p)]
    try:
        manifest = json.loads(manifest_path.read_text())
        rows = manifest["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise BenchError(f"{manifest_path}: not an export manifest ({error})") from None
    candidates = []
    name = manifest.get("model") or ""
    # Files with test-time augmentation in the graph are their own rows ("fast+tta6"), so
    # a table of both exports shows what the views cost and buy. The .keras source sees
    # one view, so the manifest's (TTA) Keras accuracy is not its figure.
    with_tta = manifest.get("tta", "none") != "none"
    tagged = f"{name}+tta{manifest.get('tta_views')}" if with_tta else name
    source = Path(manifest.get("source") or "")
    if source.suffix == ".keras" and source.is_file():
        candidates.append(Candidate(source, "keras", "keras", reference=True,
                                    export_accuracy=None if with_tta else manifest.get("keras_accuracy"),
                                    export_images=manifest.get("validation_images"), model=name))
    for row in rows:
        path = folder / row["file"]
        if path.is_file():
            candidates.append(Candidate(path, row["engine"], row["format"], export_accuracy=row.get("accuracy"),
                                        export_images=manifest.get("validation_images"), model=tagged,
                                        calibration=row.get("calibration")))
    return candidates


def latency_stats(seconds: list[float] | np.ndarray) -> dict:
    """Percentiles of every run, and mean and std without the slow outliers.

    Percentiles are robust by themselves; the mean is not, so runs slower than the median
    by more than OUTLIER_SIGMAS robust standard deviations (1.4826 x MAD) are set aside
    for it and counted.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    if ms.size == 0:
        raise ValueError("no timings")
    median = float(np.median(ms))
    robust_sigma = 1.4826 * float(np.median(np.abs(ms - median)))
    kept = ms[ms <= median + OUTLIER_SIGMAS * robust_sigma] if robust_sigma > 0 else ms
    return {
        "runs": int(ms.size),
        "p50": round(median, 4),
        "p90": round(float(np.percentile(ms, 90)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4),
        "min": round(float(ms.min()), 4),
        "mean": round(float(kept.mean()), 4),
        "std": round(float(kept.std()), 4),
        "outliers": int(ms.size - kept.size),
    }


def time_runs(function: Callable[[], object], warmup: int, min_time: float, min_runs: int = MIN_RUNS) -> list[float]:
    for _ in range(warmup):
        function()
    times: list[float] = []
    deadline = time.perf_counter() + min_time
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


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
            self.engine = open_engine(self.candidate.path, self.candidate.engine, self.options.threads)
            self.row.load_ms = round((time.perf_counter() - start) * 1000, 2)
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


def _schedule(options: BenchOptions) -> list[tuple[int, int, int, float]]:
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
            for batch_size, warmup, min_runs, seconds in _schedule(options):
                state.time_slice(batch_size, seconds, warmup, min_runs)
        except Exception as error:  # noqa: BLE001 - as in open(): the row records why
            state.fail(error)
    return state.finish()


class _WorkerGone(Exception):
    """A row's process died, hung or answered nonsense."""


class _RowProcess:
    """A candidate measured in its own Python process, driven one request at a time.

    Own process: its peak memory is its own, engines' thread pools do not pile up, and a
    file that crashes its engine (a segfault in native code) fails its row, not the run.
    Kept alive across slices, so the parent can interleave rows without reloading them.
    """

    def __init__(self, candidate: Candidate, split_file: Path, options: BenchOptions, scratch: Path, index: int):
        self.candidate = candidate
        # stderr to a file: TensorFlow alone writes enough to fill a pipe nobody reads.
        self.stderr = open(scratch / f"row{index}.stderr", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "cifar_edge.benchmarks.bench"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.request = {"candidate": {**asdict(candidate), "path": str(candidate.path)}, "split": str(split_file),
                        "options": {**asdict(options), "batch_sizes": list(options.batch_sizes), "engines": list(options.engines)}}

    def ask(self, message: dict, timeout_s: float) -> dict:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerGone(self._death()) from None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            self.process.kill()
            raise _WorkerGone(f"no answer within {timeout_s:g} s")
        line = self.process.stdout.readline()
        if not line:
            raise _WorkerGone(self._death())
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
    """The child side of `_RowProcess`: JSON requests on stdin, one JSON answer per line on stdout."""
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


def device_record(options: BenchOptions) -> dict:
    """What this machine is, so results from several devices can be told apart."""
    versions = {}
    for package in ("numpy", "opencv-python-headless", "opencv-python", "ai-edge-litert", "tflite-runtime", "onnxruntime",
                    "onnxruntime-gpu", "keras", "tensorflow", "jax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "name": options.device_name or socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "architecture": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "threads": options.threads,
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    # x86 says "model name"; a Raspberry Pi says "Model" (the board) and the cores' names are bare.
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def count_steps(candidates: list[Candidate], options: BenchOptions) -> int:
    """Progress units of `run_benchmark`: one per row opened and one per timed slice."""
    return len(candidates) * (1 + len(_schedule(options)))


def run_benchmark(candidates: list[Candidate], split: Split, options: BenchOptions, data_source: str | None,
                  on_step: Callable[[str], None] | None = None, command: str | None = None) -> dict:
    """Measure every candidate, each in its own process, with their timed slices interleaved.

    A shared machine has slow spells (here, 0.5-1 s in which everything runs 1.4-1.7x
    slower). Timing rows one after another lets a spell land on one row's whole timing;
    cycling through all rows in slices of `slice_time` spreads it over every row, so the
    medians of two runs agree.
    """
    ordered = sorted(candidates, key=lambda c: c.engine == "keras")  # the heavy framework loads last
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cifar-bench-") as scratch:
        split_file = Path(scratch) / "split.npz"
        np.savez(split_file, images=split.images, labels=split.labels)
        workers = [_RowProcess(c, split_file, options, Path(scratch), i) for i, c in enumerate(ordered)]
        try:
            for worker in workers:
                try:
                    rows.append(Row(**worker.ask(worker.request, timeout_s=1800)))
                except _WorkerGone as gone:
                    candidate = worker.candidate
                    rows.append(Row(candidate.format, candidate.engine, str(candidate.path), "failed", str(gone), candidate.reference,
                                    candidate.model))
                if on_step:
                    on_step(f"{worker.candidate.format} ({worker.candidate.engine}) loaded")
            for step, (batch_size, warmup, min_runs, seconds) in enumerate(_schedule(options)):
                order = range(len(workers)) if step % 2 == 0 else reversed(range(len(workers)))
                for index in order:
                    if rows[index].status == "ok":
                        message = {"batch_size": batch_size, "seconds": seconds, "warmup": warmup, "min_runs": min_runs}
                        try:
                            answer = workers[index].ask(message, timeout_s=600 + 10 * seconds)
                        except _WorkerGone as gone:
                            answer = {"error": str(gone)}
                        if "error" in answer:
                            rows[index] = replace(rows[index], status="failed", error=answer["error"])
                    if on_step:
                        on_step(f"{ordered[index].format} ({ordered[index].engine}) batch {batch_size}")
            for index, worker in enumerate(workers):
                if rows[index].status == "ok":
                    try:
                        # The child kept every slice's timings: its final row has latency, throughput and peak memory.
                        rows[index] = Row(**worker.ask({"done": True}, timeout_s=60))
                    except _WorkerGone as gone:
                        rows[index] = replace(rows[index], status="failed", error=str(gone))
        finally:
            for worker in workers:
                worker.close()
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": device_record(options),
        "options": {**asdict(options), "batch_sizes": list(options.batch_sizes), "engines": list(options.engines)},
        "data": {"source": data_source, "split": "test", "images": len(split), "seed": options.seed},
        "rows": [asdict(row) for row in rows],
    }


# --- outputs -----------------------------------------------------------------------------------


def _size(size_bytes) -> str:
    if size_bytes is None:
        return "-"
    return f"{size_bytes / 1024:.1f} KB" if size_bytes < 1024 * 1024 else f"{size_bytes / 1024 / 1024:.2f} MB"


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def markdown_table(results_list: list[dict]) -> str:
    """The issue's columns, after a Device column when several devices are merged and a Model
    column when several models are."""
    several = len({r["device"]["name"] for r in results_list}) > 1
    models = _several_models(results_list)
    columns = (("Device",) if several else ()) + (("Model",) if models else ()) + TABLE_COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for results in results_list:
        for row in results["rows"]:
            latency = row["latency_ms"] or {}
            accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
            ece = _fmt(row.get("ece"), ".2%") + (f" → {row['ece_calibrated']:.2%}" if row.get("ece_calibrated") is not None else "")
            coverage = _fmt((row.get("coverage") or {}).get(TABLE_COVERAGE), ".1%")
            status = row["status"] if row["status"] == "ok" else f"failed: {row['error']}"
            cells = ([results["device"]["name"]] if several else []) + ([row.get("model", "")] if models else []) + [
                f"{row['format']} ({row['engine']})" if row["format"] in ("tflite", "onnx") else row["format"],
                status, _size(row["size_bytes"]), accuracy, ece, coverage, _fmt(latency.get("p50"), ".3f"), _fmt(latency.get("p90"), ".3f"),
                _fmt(row["fps"], ".0f"), _fmt(row["peak_mb"], ".1f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _several_models(results_list: list[dict]) -> bool:
    return len({row.get("model") for results in results_list for row in results["rows"]}) > 1


CSV_FIELDS = ("device", "model", "format", "engine", "file", "status", "error", "reference", "size_bytes", "load_ms", "images", "accuracy",
              "export_accuracy", "ece", "ece_calibrated", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "runs", "outliers", "fps", "peak_mb", "engine_version")


def csv_text(results_list: list[dict]) -> str:
    buffer = io.StringIO()
    batch_sizes = sorted({int(b) for r in results_list for row in r["rows"] for b in row["throughput"]})
    coverage = [_coverage_field(coverage_key(t)) for t in COVERAGE_TARGETS]
    writer = csv.DictWriter(buffer, [*CSV_FIELDS, *coverage, *(f"images_per_s_batch{b}" for b in batch_sizes)], lineterminator="\n")
    writer.writeheader()
    for results in results_list:
        for row in results["rows"]:
            latency = row["latency_ms"] or {}
            flat = {key: row.get(key) for key in CSV_FIELDS if key in row}
            flat.update(device=results["device"]["name"], **{f"{k}_ms": latency.get(k) for k in ("p50", "p90", "p99", "mean", "std")},
                        runs=latency.get("runs"), outliers=latency.get("outliers"))
            flat.update({f"images_per_s_batch{b}": v for b, v in row["throughput"].items()})
            flat.update({_coverage_field(key): value for key, value in (row.get("coverage") or {}).items()})
            writer.writerow(flat)
    return buffer.getvalue()


def _coverage_field(key: str) -> str:
    return f"coverage_at_{key.rstrip('%')}"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front, best = [], -np.inf
    for index in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def plot(results_list: list[dict], path: Path) -> Path | None:
    """Accuracy against p50 latency (log x), one labelled point per row, Pareto front per device.

    Returns None when matplotlib is not installed (a Pi with only the runtime extra):
    `cifar-bench report` draws it later on any machine that has it.
    """
    if importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    models = _several_models(results_list)
    figure, axes = plt.subplots(figsize=(8, 5.5))
    labelled: list[tuple[float, float, str]] = []
    markers = "os^Dvp*"
    for device_index, results in enumerate(results_list):
        rows = [r for r in results["rows"] if r["status"] == "ok"]
        if not rows:
            continue
        points = [(r["latency_ms"]["p50"], 100 * r["accuracy"]) for r in rows]
        colour = f"C{device_index}"
        axes.scatter(*zip(*points), marker=markers[device_index % len(markers)], color=colour, label=results["device"]["name"], zorder=3)
        for (x, y), row in zip(points, rows):
            label = row["format"] if row["format"] not in ("tflite", "onnx") else f"{row['format']} ({row['engine']})"
            labelled.append((x, y, f"{row.get('model', '')} {label}" if models else label))
        front = [points[i] for i in pareto_front(points)]
        axes.step(*zip(*front), where="post", color=colour, alpha=0.5, linestyle="--")
    axes.set_xscale("log")
    # Plain numbers (0.2, 0.5, 1) rather than matplotlib's 2x10^-1 on a log axis; minor ticks at 2 and 5 only.
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))
    axes.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy against latency; dashed: Pareto front")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="device")
    figure.tight_layout()
    _place_labels(figure, axes, labelled)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
    return path


#: Where a label may go, in points from its point: beside it first, then further up or down with a leader line.
_LABEL_OFFSETS = [(dx, dy) for dy in (3, -11, 13, -21, 23, -31, 33, -41) for dx in (6, -6)]


def _place_labels(figure, axes, labelled: list[tuple[float, float, str]]) -> None:
    """Label every point where the label hides no other label or point.

    Formats of one model often tie on accuracy and latency (fp32 and fp16 do), so fixed
    offsets print labels over each other. Each label takes the first free spot.
    """
    from matplotlib.transforms import Bbox

    renderer = figure.canvas.get_renderer()
    inside = axes.get_window_extent(renderer)
    taken = [Bbox([[x - 4, y - 4], [x + 4, y + 4]]) for x, y in axes.transData.transform([(x, y) for x, y, _ in labelled])]
    for x, y, text in sorted(labelled):
        for dx, dy in _LABEL_OFFSETS:
            arrow = {"arrowstyle": "-", "color": "0.6", "linewidth": 0.6} if abs(dy) > 13 else None
            note = axes.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                                 ha="left" if dx > 0 else "right", arrowprops=arrow)
            box = note.get_window_extent(renderer)
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
            if fits and not any(box.overlaps(other) for other in taken):
                break
            if (dx, dy) != _LABEL_OFFSETS[-1]:
                note.remove()
        taken.append(box)


def write_outputs(results_list: list[dict], out: Path) -> list[Path]:
    """results.json (one run, or `runs` when merged), results.csv, results.md and the plot."""
    json_data = results_list[0] if len(results_list) == 1 else {"schema": SCHEMA, "runs": results_list}
    written = [out / "results.json", out / "results.csv", out / "results.md"]
    write_json(written[0], json_data)
    write_text(written[1], csv_text(results_list))
    write_text(written[2], markdown_table(results_list))
    figure = plot(results_list, out / PLOT_NAME)
    return written + ([figure] if figure else [])


def read_results(path: str) -> list[dict]:
    """The runs in a results.json (or the folder holding one), checked against the schema."""
    given = Path(path).expanduser()
    file = given / "results.json" if given.is_dir() else given
    if not file.is_file():
        raise BenchError(f"{path}: no results.json there")
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchError(f"{file}: unreadable results ({error})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BenchError(f"{file}: not a {SCHEMA} results file")
    runs = data.get("runs", [data])
    for run in runs:
        if not isinstance(run, dict) or not {"device", "rows"} <= set(run):
            raise BenchError(f"{file}: a run lacks device or rows")
    return runs


if __name__ == "__main__":
    _serve()
