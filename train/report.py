"""What a training run reports: the history table and the diagnostic plots.

Plots use matplotlib's object API (no pyplot), so nothing depends on a display or on
global figure state.
"""

from __future__ import annotations

import csv
import io
import os

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifar_edge.runtime.files import atomic_path

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "test_loss", "test_accuracy", "learning_rate", "train_seconds", "wall_seconds")


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _save(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")


def plot_learning_curves(history: list[dict], path: str | os.PathLike, title: str) -> None:
    """Loss and accuracy per epoch, train against test, like the tutorial's diagnostics."""
    _save(learning_curves_figure(history, title), path)


def learning_curves_figure(history: list[dict], title: str) -> Figure:
    """Whole epochs on the x axis, accuracy in % as in every other report of ours."""
    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4), layout="constrained")
    panels = (("loss", "cross-entropy loss", 1.0), ("accuracy", "accuracy (%)", 100.0))
    for axes, (key, label, scale) in zip(figure.subplots(1, 2), panels, strict=True):
        axes.plot(epochs, [scale * row[key] for row in history], marker="o", markersize=3, label="train")
        axes.plot(epochs, [scale * row[f"test_{key}"] for row in history], marker="o", markersize=3, label="test")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    return figure
