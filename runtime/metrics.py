"""Counts over predictions, shared by training reports and the benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np

from cifar_edge.runtime.labels import NUM_CLASSES


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix
