"""What a training run reports: the history table and the diagnostic plots.

Plots use matplotlib's object API (no pyplot), so nothing depends on a display or on
global figure state.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifar_edge.runtime.files import atomic_path
from cifar_edge.runtime.labels import NUM_CLASSES

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "test_loss", "test_accuracy", "learning_rate", "train_seconds", "wall_seconds")


def history_csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


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


def plot_confusion_matrix(matrix: np.ndarray, class_names, path: str | os.PathLike, title: str) -> None:
    """Row-normalised colours with the raw counts written in each cell."""
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(7.5, 6.5), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            axes.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=7,
                      color="white" if rates[row, column] > 0.5 else "black")
    axes.set_title(title)
    _save(figure, path)
