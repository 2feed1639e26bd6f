"""Test-time augmentation (TTA): the views of an image whose predictions are averaged.

One table serves the trainer (numpy views of test images) and the exporter (the same
views built into the exported graph from built-in ops), so a figure reported at training
time is the figure the shipped file gives.

Views are averaged as log-probabilities with the weights below. Since
log softmax(z) = z - logsumexp(z), the softmax of that weighted mean equals the softmax of
the weighted mean of the logits: the same rule as airbench94's logit averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class View:
    """One view: shift by (dy, dx) pixels with reflect padding, then maybe mirror."""

    dy: int
    """Rows the content moves down (negative: up)."""
    dx: int
    """Columns the content moves right (negative: left)."""
    flip: bool
    """Mirror left to right."""
    weight: float
    """Weight of this view's log-probabilities in the mean (the weights of a mode sum to 1)."""


# airbench94's tta_level 0/1/2: the image; image and mirror; and those two at weight 1/4
# each plus both of them shifted one pixel up-left and down-right at 1/8 each.
TTA_MODES: dict[str, tuple[View, ...]] = {
    "none": (View(0, 0, False, 1.0),),
    "flip": (View(0, 0, False, 0.5), View(0, 0, True, 0.5)),
    "6": (
        View(0, 0, False, 0.25), View(0, 0, True, 0.25),
        View(1, 1, False, 0.125), View(1, 1, True, 0.125),
        View(-1, -1, False, 0.125), View(-1, -1, True, 0.125),
    ),
}
# The largest shift of any view: the reflect padding a graph needs.
MAX_SHIFT = max(max(abs(v.dy), abs(v.dx)) for views in TTA_MODES.values() for v in views)


def views(mode: str) -> tuple[View, ...]:
    try:
        return TTA_MODES[mode]
    except KeyError:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, not {mode!r}") from None


def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """The view of a batch of NHWC images."""
    out = images
    if view.dy or view.dx:
        pad = MAX_SHIFT
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        height, width = images.shape[1:3]
        top, left = pad - view.dy, pad - view.dx
        out = padded[:, top : top + height, left : left + width]
    if view.flip:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def average(log_probabilities: list[np.ndarray], mode: str) -> np.ndarray:
    """Probabilities from the per-view log-probabilities, in the order of `views(mode)`."""
    weights = [view.weight for view in views(mode)]
    mean = sum(w * np.asarray(lp, np.float64) for w, lp in zip(weights, log_probabilities, strict=True))
    mean = mean - mean.max(axis=1, keepdims=True)
    exp = np.exp(mean)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def predict(predict_fn, images: np.ndarray, mode: str) -> np.ndarray:
    """Probabilities with TTA, where `predict_fn(images)` returns one view's probabilities."""
    if mode == "none":
        return np.asarray(predict_fn(images), np.float32)
    logs = [np.log(np.maximum(predict_fn(apply_view(images, view)), 1e-30)) for view in views(mode)]
    return average(logs, mode)
