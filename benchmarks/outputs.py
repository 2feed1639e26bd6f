"""`cifar-bench`'s outputs: the Markdown table, CSV, the accuracy-latency plot with its labels
placed clear of each other, and reading results back for `cifar-bench report`."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import numpy as np

from cifar_edge.benchmarks.records import (
    COVERAGE_TARGETS,
    PLOT_NAME,
    RISK_COVERAGE_PLOT_NAME,
    SCHEMA,
    TABLE_COLUMNS,
    TABLE_COVERAGE,
    BenchError,
    model_names,
)
from cifar_edge.benchmarks.risk_plot import plot_risk_coverage
from cifar_edge.runtime.calibration import coverage_key
from cifar_edge.runtime.files import atomic_path, write_json, write_text
from cifar_edge.runtime.plots import plain_log_x_axis


def _size(size_bytes) -> str:
    if size_bytes is None:
        return "-"
    return f"{size_bytes / 1024:.1f} KB" if size_bytes < 1024 * 1024 else f"{size_bytes / 1024 / 1024:.2f} MB"


def _fmt(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


#: The plot's accuracy axis spans at least this many percentage points.
MIN_ACCURACY_SPAN_PP = 4.0


def run_labels(results_list: list[dict]) -> list[str]:
    """One distinct label per run: its device's name, and when one device ran several times,
    the time each run started too (and its place, should two share a minute)."""
    names = [r["device"]["name"] for r in results_list]
    labels = []
    for name, results in zip(names, results_list):
        if names.count(name) > 1:
            created = str(results.get("created") or "")[:16].replace("T", " ")
            name = f"{name} {created}".strip()
        labels.append(name)
    return [f"{label} #{labels[:i].count(label) + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]


def subset_sizes(results_list: list[dict]) -> list[int | None]:
    """The distinct test-image counts of the runs (different --limit), in order."""
    return list(dict.fromkeys((r.get("data") or {}).get("images") for r in results_list))


def markdown_table(results_list: list[dict]) -> str:
    """The issue's columns, after a Device column when several devices are merged (a Run column
    when one device ran more than once and its rows repeat) and a Model column when several models are."""
    labels = run_labels(results_list)
    devices = {r["device"]["name"] for r in results_list}
    rows = [(row.get("model"), row["format"], row["engine"], row["file"]) for r in results_list for row in r["rows"]]
    # Several devices, or one device's runs whose rows could not be told apart otherwise.
    several = len(devices) > 1 or len(set(rows)) < len(rows)
    runs_of_one_device = len(devices) < len(results_list)
    names = model_names(results_list)
    models = _several(names)
    columns = ((("Run" if runs_of_one_device else "Device"),) if several else ()) + (("Model",) if models else ()) + TABLE_COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for label, results, run_names in zip(labels, results_list, names):
        for row, name in zip(results["rows"], run_names):
            latency = row["latency_ms"] or {}
            accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
            ece = _fmt(row.get("ece"), ".2%") + (f" → {row['ece_calibrated']:.2%}" if row.get("ece_calibrated") is not None else "")
            coverage = _fmt((row.get("coverage") or {}).get(TABLE_COVERAGE), ".1%")
            status = row["status"] if row["status"] == "ok" else f"failed: {row['error']}"
            cells = ([label] if several else []) + ([name] if models else []) + [
                f"{row['format']} ({row['engine']})" if row["format"] in ("tflite", "onnx") else row["format"],
                status, _size(row["size_bytes"]), accuracy, ece, coverage, _fmt(latency.get("p50"), ".3f"), _fmt(latency.get("p90"), ".3f"),
                _fmt(row["fps"], ".0f"), _fmt(row["peak_mb"], ".1f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _several(names: list[list[str]]) -> bool:
    return len({name for run in names for name in run}) > 1


CSV_FIELDS = ("device", "run", "model", "format", "engine", "file", "status", "error", "reference", "size_bytes", "load_ms", "images", "accuracy",
              "export_accuracy", "ece", "ece_calibrated", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "runs", "outliers", "fps", "peak_mb", "engine_version")


def csv_text(results_list: list[dict]) -> str:
    buffer = io.StringIO()
    batch_sizes = sorted({int(b) for r in results_list for row in r["rows"] for b in row["throughput"]})
    coverage = [_coverage_field(coverage_key(t)) for t in COVERAGE_TARGETS]
    writer = csv.DictWriter(buffer, [*CSV_FIELDS, *coverage, *(f"images_per_s_batch{b}" for b in batch_sizes)], lineterminator="\n")
    writer.writeheader()
    for label, results in zip(run_labels(results_list), results_list):
        for row in results["rows"]:
            latency = row["latency_ms"] or {}
            flat = {key: row.get(key) for key in CSV_FIELDS if key in row}
            flat.update(device=results["device"]["name"], run=label, **{f"{k}_ms": latency.get(k) for k in ("p50", "p90", "p99", "mean", "std")},
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

    names = model_names(results_list)
    models = _several(names)
    figure, axes = plt.subplots(figsize=(8, 5.5))
    labelled: list[tuple[float, float, str]] = []
    markers = "os^Dvp*"
    for device_index, (run_label, results, run_names) in enumerate(zip(run_labels(results_list), results_list, names)):
        rows = [r for r in results["rows"] if r["status"] == "ok"]
        row_names = [name for r, name in zip(results["rows"], run_names) if r["status"] == "ok"]
        if not rows:
            continue
        points = [(r["latency_ms"]["p50"], 100 * r["accuracy"]) for r in rows]
        colour = f"C{device_index}"
        axes.scatter(*zip(*points), marker=markers[device_index % len(markers)], color=colour, label=run_label, zorder=3)
        for (x, y), row, name in zip(points, rows, row_names):
            label = row["format"] if row["format"] not in ("tflite", "onnx") else f"{row['format']} ({row['engine']})"
            labelled.append((x, y, f"{name} {label}" if models else label))
        front = [points[i] for i in pareto_front(points)]
        axes.step(*zip(*front), where="post", color=colour, alpha=0.5, linestyle="--")
    plain_log_x_axis(axes)
    axes.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    sizes = subset_sizes(results_list)
    axes.set_ylabel(f"test accuracy (%, {sizes[0]:,} images)" if len(sizes) == 1 and sizes[0] else "test accuracy (%)")
    # A few points of accuracy at least: with --limit 500, one image is 0.2 pp, and an axis that
    # spans one point would make a few images' difference look large.
    low, high = axes.get_ylim()
    if high - low < MIN_ACCURACY_SPAN_PP:
        middle = (low + high) / 2
        axes.set_ylim(middle - MIN_ACCURACY_SPAN_PP / 2, middle + MIN_ACCURACY_SPAN_PP / 2)
    axes.set_title("Accuracy against latency; dashed: Pareto front")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # every row failed: nothing to label, and Matplotlib would warn
        axes.legend(title="run" if len({r["device"]["name"] for r in results_list}) < len(results_list) else "device")
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
    """results.json (one run, or `runs` when merged), results.csv, results.md and the two plots."""
    json_data = results_list[0] if len(results_list) == 1 else {"schema": SCHEMA, "runs": results_list}
    written = [out / "results.json", out / "results.csv", out / "results.md"]
    write_json(written[0], json_data)
    write_text(written[1], csv_text(results_list))
    write_text(written[2], markdown_table(results_list))
    figures = [plot(results_list, out / PLOT_NAME), plot_risk_coverage(results_list, run_labels(results_list), out / RISK_COVERAGE_PLOT_NAME)]
    return written + [figure for figure in figures if figure]


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
