"""The risk-coverage plot of `cifar-bench`: what accuracy each file reaches when it may answer `unknown`.

One line per ok row: the accuracy of the answered images against the share answered, most confident first
(calibrated scores when the file has a calibration; a temperature does not change the order, so the curve is the
file's own). The dotted line is the runtime's default target. A row from a results file written before the curve
existed has none and is left out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cifar_edge.benchmarks.records import model_names
from cifar_edge.runtime.calibration import TARGET_ACCURACY
from cifar_edge.runtime.files import atomic_path


def has_curves(results_list: list[dict]) -> bool:
    return any(row.get("risk_coverage") for results in results_list for row in results["rows"] if row["status"] == "ok")


def plot_risk_coverage(results_list: list[dict], labels: list[str], path: Path) -> Path | None:
    """Write the plot to `path`; None when matplotlib is missing or no row has a curve. `labels`: one per run."""
    if not has_curves(results_list) or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    styles = ("-", "--", ":", "-.")
    index = 0
    for run_index, (run_label, results, run_names) in enumerate(zip(labels, results_list, model_names(results_list))):
        for row, model in zip(results["rows"], run_names):
            curve = row.get("risk_coverage")
            if row["status"] != "ok" or not curve:
                continue
            coverage, accuracy = zip(*curve)
            name = " ".join(filter(None, (model, row["format"], f"({row['engine']})")))
            axes.plot([100 * c for c in coverage], [100 * a for a in accuracy], marker="o", markersize=3,
                      color=f"C{index % 10}", linestyle=styles[run_index % len(styles)],
                      label=f"{name}, {run_label}" if len(results_list) > 1 else name)
            index += 1
    axes.axhline(100 * TARGET_ACCURACY, color="grey", linestyle=":", label=f"default target {TARGET_ACCURACY:.0%}")
    axes.set_xlabel("coverage: images answered (%), most confident first")
    axes.set_ylabel("accuracy of the answered images (%)")
    axes.set_xlim(0, 100)
    axes.set_title("Risk-coverage: accuracy when the rest are answered 'unknown'")
    axes.grid(True, alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # every row failed: nothing to label, and Matplotlib would warn
        axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
    return path
