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

from cifar_edge.runtime.data import Split
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import atomic_path, write_json, write_text
from cifar_edge.runtime.formats import engine_for

SCHEMA = "cifar-bench/1"
BENCH_ENGINES = ("litert", "onnxruntime", "keras")
MODEL_SUFFIXES = (".tflite", ".onnx", ".keras")
#: Slow outliers (a context switch, a page fault) are left out of mean and std beyond this many robust sigmas.
OUTLIER_SIGMAS = 5.0
PLOT_NAME = "accuracy_vs_latency.png"
TABLE_COLUMNS = ("Format", "Status", "Size", "Accuracy", "p50 ms", "p90 ms", "FPS", "Peak MB")


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
    rounds: int = 3
    """Timing is split into this many rounds over all rows, alternating their order, so a slow
    spell of a shared machine is spread over every row instead of landing on one."""


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


@dataclass
class Row:
    """One measured file and engine: the unit of every output."""

    format: str
    engine: str
    file: str
    status: str = "ok"
    error: str | None = None
    reference: bool = False
    engine_version: str | None = None
    size_bytes: int | None = None
    load_ms: float | None = None
    images: int | None = None
    accuracy: float | None = None
    export_accuracy: float | None = None
    latency_ms: dict | None = None
    fps: float | None = None
    throughput: dict = field(default_factory=dict)
    peak_mb: float | None = None
    timings_s: list[float] | None = None
    """Raw batch-1 timings of one round, merged across rounds and then dropped from the outputs."""


def find_candidates(inputs: list[str], engines: tuple[str, ...] = BENCH_ENGINES) -> list[Candidate]:
    """Model files and export folders as rows to measure, in the order given."""
    candidates: list[Candidate] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_file():
            if path.suffix.lower() not in MODEL_SUFFIXES:
                raise BenchError(f"{given}: not a model file (expected {', '.join(MODEL_SUFFIXES)})")
            candidates.append(Candidate(path, engine_for(path), path.suffix.lower().lstrip("."), reference=path.suffix == ".keras"))
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
                for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES]
    try:
        manifest = json.loads(manifest_path.read_text())
        rows = manifest["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise BenchError(f"{manifest_path}: not an export manifest ({error})") from None
    candidates = []
    source = Path(manifest.get("source") or "")
    if source.suffix == ".keras" and source.is_file():
        candidates.append(Candidate(source, "keras", "keras", reference=True, export_accuracy=manifest.get("keras_accuracy"),
                                    export_images=manifest.get("validation_images")))
    for row in rows:
        path = folder / row["file"]
        if path.is_file():
            candidates.append(Candidate(path, row["engine"], row["format"], export_accuracy=row.get("accuracy"),
                                        export_images=manifest.get("validation_images")))
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


def measure(candidate: Candidate, split: Split, options: BenchOptions, with_accuracy: bool = True) -> Row:
    """Measure one candidate for one round; any failure becomes a failed row with its reason."""
    row = Row(candidate.format, candidate.engine, str(candidate.path), reference=candidate.reference,
              export_accuracy=candidate.export_accuracy if candidate.export_images == len(split) else None)
    try:
        row.size_bytes = candidate.path.stat().st_size
        with _PeakMemory() as memory:
            start = time.perf_counter()
            engine = open_engine(candidate.path, candidate.engine, options.threads)
            row.load_ms = round((time.perf_counter() - start) * 1000, 2)
            row.engine_version = engine.version
            if with_accuracy:
                probabilities = engine.predict(split.images, batch_size=max(options.batch_sizes))
                row.images = len(split)
                row.accuracy = float(np.mean(probabilities.argmax(1) == split.labels))
            one = split.images[:1]
            row.timings_s = time_runs(lambda: engine.predict(one), options.warmup, options.min_time)
            row.latency_ms = latency_stats(row.timings_s)
            row.fps = round(1000 / row.latency_ms["p50"], 1)
            for batch_size in options.batch_sizes:
                batch = split.images[np.arange(batch_size) % len(split)]
                times = time_runs(lambda b=batch: engine.predict(b, batch_size=len(b)), max(1, options.warmup // 2), options.min_time)
                row.throughput[str(batch_size)] = round(batch_size / float(np.median(times)), 1)
        row.peak_mb = memory.peak_mb
    except Exception as error:  # noqa: BLE001 - a row that cannot load or run is reported, and the others still run
        row.status = "failed"
        row.error = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
    return row


def measure_isolated(candidate: Candidate, split_file: Path, options: BenchOptions, with_accuracy: bool = True,
                     timeout_s: float = 900) -> Row:
    """`measure` in a fresh Python process.

    Each row then starts from the same clean state: its peak memory is its own (freed
    memory from an earlier row cannot hide it), engines' thread pools do not pile up, and
    a file that crashes its engine (a segfault in native code) fails its row, not the run.
    """
    request = json.dumps({"candidate": {**asdict(candidate), "path": str(candidate.path)}, "split": str(split_file),
                          "with_accuracy": with_accuracy,
                          "options": {**asdict(options), "batch_sizes": list(options.batch_sizes), "engines": list(options.engines)}})
    try:
        child = subprocess.run([sys.executable, "-m", "cifar_edge.benchmarks.bench"], input=request, capture_output=True, text=True,
                               timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Row(candidate.format, candidate.engine, str(candidate.path), "failed", f"timed out after {timeout_s:g} s",
                   candidate.reference)
    if child.returncode != 0 or not child.stdout.strip():
        tail = " ".join(child.stderr.strip().splitlines()[-1:])[:300] if child.stderr.strip() else ""
        reason = f"signal {-child.returncode}" if child.returncode < 0 else f"exit {child.returncode}"
        return Row(candidate.format, candidate.engine, str(candidate.path), "failed", f"engine process died ({reason}) {tail}".strip(),
                   candidate.reference)
    return Row(**json.loads(child.stdout.strip().splitlines()[-1]))


def _measure_request() -> None:
    """The child side of `measure_isolated`: a JSON request on stdin, the Row as JSON on stdout."""
    request = json.loads(sys.stdin.read())
    candidate = Candidate(**{**request["candidate"], "path": Path(request["candidate"]["path"])})
    options = BenchOptions(**{**request["options"], "batch_sizes": tuple(request["options"]["batch_sizes"]),
                              "engines": tuple(request["options"]["engines"])})
    with np.load(request["split"]) as arrays:
        split = Split(arrays["images"], arrays["labels"])
    # The engines' own chatter goes to stderr; stdout carries only the answer.
    row = measure(candidate, split, options, request["with_accuracy"])
    sys.stdout.write(json.dumps(asdict(row)) + "\n")


def _merge_rounds(rounds: list[Row]) -> Row:
    """One row from its rounds: accuracy from the first, latency over every round's runs."""
    first = rounds[0]
    failed = next((r for r in rounds if r.status != "ok"), None)
    if failed is not None:
        return replace(failed, accuracy=first.accuracy, images=first.images, timings_s=None)
    timings = [t for r in rounds for t in r.timings_s]
    latency = latency_stats(timings)
    throughput = {batch: round(float(np.median([r.throughput[batch] for r in rounds])), 1) for batch in first.throughput}
    return replace(first, latency_ms=latency, fps=round(1000 / latency["p50"], 1), throughput=throughput,
                   load_ms=round(float(np.median([r.load_ms for r in rounds])), 2),
                   peak_mb=max((r.peak_mb for r in rounds if r.peak_mb is not None), default=None), timings_s=None)


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


def run_benchmark(candidates: list[Candidate], split: Split, options: BenchOptions, data_source: str | None,
                  on_row: Callable[[Candidate, Row | None], None] | None = None, command: str | None = None) -> dict:
    """Measure every candidate (the Keras reference last, as it loads a heavy framework)."""
    ordered = sorted(candidates, key=lambda c: c.engine == "keras")
    rounds: list[list[Row]] = [[] for _ in ordered]
    per_round = replace(options, min_time=options.min_time / options.rounds)
    with tempfile.TemporaryDirectory(prefix="cifar-bench-") as scratch:
        split_file = Path(scratch) / "split.npz"
        np.savez(split_file, images=split.images, labels=split.labels)
        for round_index in range(options.rounds):
            order = range(len(ordered)) if round_index % 2 == 0 else reversed(range(len(ordered)))
            for index in order:
                if rounds[index] and rounds[index][0].status != "ok":
                    continue  # a row that failed once is not retried
                if on_row:
                    on_row(ordered[index], None)
                row = measure_isolated(ordered[index], split_file, per_round, with_accuracy=round_index == 0)
                rounds[index].append(row)
                if on_row:
                    on_row(ordered[index], row)
    rows = [_merge_rounds(measured) for measured in rounds]
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": device_record(options),
        "options": {**asdict(options), "batch_sizes": list(options.batch_sizes), "engines": list(options.engines)},
        "data": {"source": data_source, "split": "test", "images": len(split), "seed": options.seed},
        "rows": [{k: v for k, v in asdict(row).items() if k != "timings_s"} for row in rows],
    }


# --- outputs -----------------------------------------------------------------------------------


def _size(size_bytes) -> str:
    if size_bytes is None:
        return "-"
    return f"{size_bytes / 1024:.1f} KB" if size_bytes < 1024 * 1024 else f"{size_bytes / 1024 / 1024:.2f} MB"


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def markdown_table(results_list: list[dict]) -> str:
    """The issue's columns, with a Device column first when several devices are merged."""
    several = len({r["device"]["name"] for r in results_list}) > 1
    columns = (("Device",) if several else ()) + TABLE_COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for results in results_list:
        for row in results["rows"]:
            latency = row["latency_ms"] or {}
            accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
            status = row["status"] if row["status"] == "ok" else f"failed: {row['error']}"
            cells = ([results["device"]["name"]] if several else []) + [
                f"{row['format']} ({row['engine']})" if row["format"] in ("tflite", "onnx") else row["format"],
                status, _size(row["size_bytes"]), accuracy, _fmt(latency.get("p50"), ".3f"), _fmt(latency.get("p90"), ".3f"),
                _fmt(row["fps"], ".0f"), _fmt(row["peak_mb"], ".1f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("device", "format", "engine", "file", "status", "error", "reference", "size_bytes", "load_ms", "images", "accuracy",
              "export_accuracy", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "runs", "outliers", "fps", "peak_mb", "engine_version")


def csv_text(results_list: list[dict]) -> str:
    buffer = io.StringIO()
    batch_sizes = sorted({int(b) for r in results_list for row in r["rows"] for b in row["throughput"]})
    writer = csv.DictWriter(buffer, [*CSV_FIELDS, *(f"images_per_s_batch{b}" for b in batch_sizes)], lineterminator="\n")
    writer.writeheader()
    for results in results_list:
        for row in results["rows"]:
            latency = row["latency_ms"] or {}
            flat = {key: row.get(key) for key in CSV_FIELDS if key in row}
            flat.update(device=results["device"]["name"], **{f"{k}_ms": latency.get(k) for k in ("p50", "p90", "p99", "mean", "std")},
                        runs=latency.get("runs"), outliers=latency.get("outliers"))
            flat.update({f"images_per_s_batch{b}": v for b, v in row["throughput"].items()})
            writer.writerow(flat)
    return buffer.getvalue()


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

    figure, axes = plt.subplots(figsize=(8, 5.5))
    markers = "os^Dvp*"
    for device_index, results in enumerate(results_list):
        rows = [r for r in results["rows"] if r["status"] == "ok"]
        if not rows:
            continue
        points = [(r["latency_ms"]["p50"], 100 * r["accuracy"]) for r in rows]
        colour = f"C{device_index}"
        axes.scatter(*zip(*points), marker=markers[device_index % len(markers)], color=colour, label=results["device"]["name"], zorder=3)
        for index, ((x, y), row) in enumerate(zip(points, rows)):
            label = row["format"] if row["format"] not in ("tflite", "onnx") else f"{row['format']} ({row['engine']})"
            # Alternate above and below: formats of equal accuracy otherwise print over each other.
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5 if index % 2 == 0 else -11), fontsize=8)
        front = [points[i] for i in pareto_front(points)]
        axes.step(*zip(*front), where="post", color=colour, alpha=0.5, linestyle="--")
    axes.set_xscale("log")
    axes.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Accuracy against latency; dashed: Pareto front")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(title="device")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
    return path


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
    _measure_request()
