"""Pieces of the plots that training, tuning and the benchmarks draw.

matplotlib is optional on a device (the runtime extra does not pull it), so it is imported
only inside these functions, when a picture is asked for.
"""

from __future__ import annotations

import os

import numpy as np

from cifar_edge.runtime.files import atomic_path


def plain_log_x_axis(axes) -> None:
    """A log x axis with plain numbers (0.2, 0.5, 1) rather than matplotlib's 2x10^-1; minor ticks at 2 and 5 only."""
    import matplotlib.ticker

    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else ""))


def plot_confusion_matrix(matrix: np.ndarray, class_names, path: str | os.PathLike, title: str) -> None:
    """Row-normalised colours with the raw counts written in each cell."""
    from matplotlib.figure import Figure

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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=120, format="png")
