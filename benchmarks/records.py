"""What `cifar-bench` is asked (`BenchOptions`), what it measures (`Candidate`) and what a measurement is (`Row`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cifar_edge.runtime.calibration import TARGET_ACCURACY, coverage_key
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.formats import ENGINES

SCHEMA = "cifar-bench/1"
#: The engines with rows, from the format table: its engines, then Keras for the reference.
BENCH_ENGINES = ENGINES
PLOT_NAME = "accuracy_vs_latency.png"
RISK_COVERAGE_PLOT_NAME = "risk_coverage.png"
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
    risk_coverage: list | None = None
    """[coverage, accuracy of the answered images] at every 5% of coverage, most confident answered first."""
    latency_ms: dict | None = None
    fps: float | None = None
    throughput: dict = field(default_factory=dict)
    peak_mb: float | None = None


def model_names(results_list: list[dict]) -> list[list[str]]:
    """Each row's model name, per run. Where one run measured the same model, format and engine from two
    folders (a new export beside the packaged one), those rows also name their file's folder, with as few
    of its last path parts as tell it from the others (`run-a/export`, `run-b/export`, `packaged-edge`)."""
    names = []
    for results in results_list:
        keys = [(row.get("model"), row["format"], row["engine"]) for row in results["rows"]]
        folders = [Path(row["file"]).parent.parts for row in results["rows"]]
        labels = []
        for i, (row, key, folder) in enumerate(zip(results["rows"], keys, folders)):
            others = [f for j, (f, k) in enumerate(zip(folders, keys)) if k == key and j != i]
            labels.append((row.get("model") or "") + (f" ({_shortest_distinct(folder, others)})" if others else ""))
        names.append(labels)
    return names


def _shortest_distinct(folder: tuple[str, ...], others: list[tuple[str, ...]]) -> str:
    """The fewest last parts of `folder` that none of `others` ends with (all of it where none do)."""
    for depth in range(1, len(folder) + 1):
        if all(other[-depth:] != folder[-depth:] for other in others):
            return "/".join(folder[-depth:])
    return "/".join(folder) or "."
