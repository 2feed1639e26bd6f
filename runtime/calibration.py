"""Calibrated confidence and selective prediction, in numpy (the runtime's and the exporter's).

A `Calibration` travels with each exported file (its manifest row, and ONNX metadata):
- `temperature` T, fitted on held-out training images by minimising the negative log
  likelihood of softmax(log p / T). The file itself keeps the contract (probabilities);
  the runtime rescales its log-probabilities in postprocess.
- `min_score`, the calibrated top score below which the runtime answers `unknown`: the
  lowest threshold at which the accepted held-out predictions are at least
  `target_accuracy` correct.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# Probabilities of an int8 file can be exactly 0; their log is floored, not -inf.
PROBABILITY_FLOOR = 1e-12
ECE_BINS = 15
TARGET_ACCURACY = 0.98
# Temperatures searched, on a log scale: far wider than any model of ours needs (0.6 to 2.5).
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def log_probabilities(probabilities: np.ndarray, floor: float = PROBABILITY_FLOOR) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, np.float64), floor))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row: the calibrated probabilities."""
    if temperature == 1.0:
        return np.asarray(probabilities, np.float32)
    scaled = log_probabilities(probabilities) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = log_probabilities(probabilities) / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_norm - shifted[np.arange(len(labels)), labels]))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray, tolerance: float = 1e-4) -> float:
    """The T minimising the held-out NLL. The NLL is convex in 1/T, so unimodal in log T:
    a golden-section search finds it."""
    low, high = _LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (negative_log_likelihood(probabilities, labels, math.exp(x)) for x in (a, b))
    while high - low > tolerance:
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(probabilities, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(probabilities, labels, math.exp(b))
    return math.exp((low + high) / 2)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """The top score's mean |accuracy - confidence| over equal-width score bins, weighted by count."""
    confidence = np.max(probabilities, axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def threshold_for_accuracy(probabilities: np.ndarray, labels: np.ndarray, target: float) -> float | None:
    """The lowest top score s such that predictions scoring >= s are at least `target` correct;
    None when not even the most confident prediction alone reaches it."""
    confidence = np.max(probabilities, axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    scores = confidence[order]
    # Only cut between distinct scores: ties are accepted or refused together.
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    good = np.flatnonzero((accuracy >= target) & last_of_tie)
    return float(scores[good[-1]]) if len(good) else None


def coverage_key(target: float) -> str:
    """How a risk-coverage target is named in results: 0.98 -> "98%"."""
    return f"{target * 100:g}%"


#: Coverages of the risk-coverage curve: every 5% of the images, most confident first.
CURVE_COVERAGES = tuple(round(0.05 * i, 2) for i in range(1, 21))


def risk_coverage_curve(probabilities: np.ndarray, labels: np.ndarray, coverages=CURVE_COVERAGES) -> list[list[float]]:
    """[coverage, accuracy of the answered images] when only the most confident `coverage` of them are answered."""
    confidence = np.max(probabilities, axis=1)
    correct = (np.argmax(probabilities, axis=1) == labels)[np.argsort(-confidence, kind="stable")]
    # Accuracy of the k most confident answers, for every k at once.
    running = np.cumsum(correct) / np.arange(1, len(correct) + 1)
    return [[float(coverage), float(running[max(1, int(round(coverage * len(correct)))) - 1])] for coverage in coverages]


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray, targets=(0.95, 0.98, 0.99)) -> dict[str, float]:
    """For each accepted-accuracy target, the fraction of images accepted at its threshold."""
    confidence = np.max(probabilities, axis=1)
    coverage = {}
    for target in targets:
        threshold = threshold_for_accuracy(probabilities, labels, target)
        coverage[coverage_key(target)] = 0.0 if threshold is None else float(np.mean(confidence >= threshold))
    return coverage


@dataclass(frozen=True)
class Calibration:
    """What travels with an exported file to make its scores trustworthy."""

    temperature: float
    """Divides the file's log-probabilities before the softmax (1: unchanged)."""
    min_score: float
    """Calibrated top scores below this are answered `unknown` (by default)."""
    target_accuracy: float
    """The held-out accuracy of the accepted predictions that `min_score` was chosen for."""
    images: int
    """Held-out training images both were fitted on."""

    @classmethod
    def fit(cls, probabilities: np.ndarray, labels: np.ndarray, target_accuracy: float = TARGET_ACCURACY) -> Calibration:
        temperature = fit_temperature(probabilities, labels)
        calibrated = apply_temperature(probabilities, temperature)
        threshold = threshold_for_accuracy(calibrated, labels, target_accuracy)
        # No threshold reaches the target: refuse everything rather than promise what the model cannot do.
        return cls(round(temperature, 5), 1.0 if threshold is None else round(threshold, 6), target_accuracy, len(labels))

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return apply_temperature(probabilities, self.temperature)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        try:
            calibration = cls(float(data["temperature"]), float(data["min_score"]), float(data["target_accuracy"]), int(data["images"]))
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"calibration needs temperature, min_score, target_accuracy and images ({error})") from None
        if isinstance(data["images"], bool) or calibration.images < 1:
            raise ValueError(f"calibration images must be a positive count, found {data['images']!r}")
        if not (0 < calibration.temperature < math.inf and 0 <= calibration.min_score <= 1):
            raise ValueError(f"calibration out of range: temperature {calibration.temperature}, min_score {calibration.min_score}")
        return calibration
