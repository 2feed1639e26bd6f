"""Calibrated confidence: temperature fitting, ECE, thresholds for selective prediction (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_edge.runtime.calibration import (
    Calibration,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    risk_coverage,
    risk_coverage_curve,
    threshold_for_accuracy,
)


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def calibrated_sample(count=20_000, seed=0):
    """Logits whose softmax is calibrated by construction: each label is drawn from it."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (count, 10))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (rng.random((count, 1)) > cumulative).sum(axis=1)
    return logits, np.minimum(labels, 9)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.0, 3.0])
def test_temperature_fitting_recovers_a_known_temperature(true_temperature):
    logits, labels = calibrated_sample()
    # A model over- (T > 1) or under-confident (T < 1) by a known factor.
    probabilities = softmax(logits * true_temperature)
    fitted = fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.03)
    before = expected_calibration_error(probabilities, labels)
    after = expected_calibration_error(apply_temperature(probabilities, fitted), labels)
    assert after < 0.015
    if true_temperature != 1.0:
        assert before > 0.1


def test_ece_by_hand():
    # Two bins used: scores 0.95 (2 right of 2) and 0.55 (1 right of 2).
    probabilities = np.full((4, 10), 0.0)
    probabilities[:2, 0], probabilities[:2, 1] = 0.95, 0.05
    probabilities[2:, 0], probabilities[2:, 1] = 0.55, 0.45
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)


def test_threshold_accepts_exactly_what_reaches_the_target():
    scores = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    probabilities = np.zeros((6, 10))
    probabilities[:, 0] = scores
    probabilities[:, 1] = 1 - scores
    labels = np.array([0, 0, 0, 1, 0, 1])  # the 4th most confident is wrong
    assert threshold_for_accuracy(probabilities, labels, 1.0) == pytest.approx(0.9)
    assert threshold_for_accuracy(probabilities, labels, 0.8) == pytest.approx(0.7)
    wrong_first = np.array([1, 0, 0, 0, 0, 0])
    assert threshold_for_accuracy(probabilities, wrong_first, 0.99) is None
    coverage = risk_coverage(probabilities, labels, targets=(0.8, 0.99))
    assert coverage == {"80%": pytest.approx(5 / 6), "99%": pytest.approx(0.5)}


def test_calibration_fits_serialises_and_refuses_nonsense():
    logits, labels = calibrated_sample(5000, seed=1)
    calibration = Calibration.fit(softmax(logits * 2.0), labels)
    assert calibration.temperature == pytest.approx(2.0, rel=0.05) and calibration.images == 5000
    accepted = calibration.apply(softmax(logits * 2.0)).max(axis=1) >= calibration.min_score
    accuracy = np.mean(np.argmax(logits, axis=1)[accepted] == labels[accepted])
    assert accuracy >= calibration.target_accuracy
    assert Calibration.from_dict(calibration.as_dict()) == calibration
    for bad in ({}, {"temperature": -1, "min_score": 0.5, "target_accuracy": 0.98, "images": 3},
                {"temperature": "x", "min_score": 0.5, "target_accuracy": 0.98, "images": 3}):
        with pytest.raises(ValueError):
            Calibration.from_dict(bad)


def test_the_risk_coverage_curve_answers_the_most_confident_first():
    # Four images, most confident first: right, right, wrong, right.
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    curve = risk_coverage_curve(probabilities, labels, coverages=(0.25, 0.5, 0.75, 1.0))
    assert curve == [[0.25, 1.0], [0.5, 1.0], [0.75, pytest.approx(2 / 3)], [1.0, 0.75]]
