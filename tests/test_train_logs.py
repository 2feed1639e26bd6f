"""What a training run shows: Keras' log names for the test subset, and the learning curves' axes."""

from __future__ import annotations

import pytest

pytest.importorskip("keras")

from cifar_edge.train.report import learning_curves_figure  # noqa: E402
from cifar_edge.train.settings import TrainSettings  # noqa: E402
from cifar_edge.train.trainer import train  # noqa: E402


def test_keras_progress_says_test_not_val(small_dataset, tmp_path, capsys):
    settings = TrainSettings.for_model("resnet8", epochs=2, batch_size=64, limit_train=200, limit_test=100)
    result = train(settings, small_dataset, tmp_path / "run", verbose=2)
    out = capsys.readouterr().out
    assert "test_accuracy" in out and "test_loss" in out, out
    assert "val_" not in out, out
    # What reads the Keras names still gets them: the history, checkpoints and metrics.json.
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(0 <= row["test_accuracy"] <= 1 and row["test_loss"] == row["test_loss"] for row in result.history)
    assert 0 <= result.metrics["test_accuracy"] <= 1


def test_learning_curves_have_whole_epochs_and_accuracy_in_percent():
    history = [{"epoch": e, "loss": 2.0 / e, "accuracy": 0.2 * e, "test_loss": 2.1 / e, "test_accuracy": 0.19 * e} for e in (1, 2, 3)]
    figure = learning_curves_figure(history, "t")
    loss_axes, accuracy_axes = figure.axes
    figure.canvas.draw()
    for axes in (loss_axes, accuracy_axes):
        ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert accuracy_axes.get_ylabel() == "accuracy (%)"
    train_line = accuracy_axes.get_lines()[0]
    assert list(train_line.get_ydata()) == pytest.approx([20.0, 40.0, 60.0])
