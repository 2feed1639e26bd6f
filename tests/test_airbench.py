"""The speed-record recipe: whitening, freezes, lookahead, alternating flip, schedule,
weight-decay conversion and test-time augmentation, on a few hundred images."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar_edge.runtime import tta  # noqa: E402
from cifar_edge.train import trainer  # noqa: E402
from cifar_edge.train.models import AIRBENCH_RECIPE, CIFAR10_MEAN, CIFAR10_STD, create_model  # noqa: E402
from cifar_edge.train.optim import GroupSGD, LinearWarmupDecay, Lookahead  # noqa: E402
from cifar_edge.train.pipeline import TrainingBatches  # noqa: E402
from cifar_edge.train.settings import TrainSettings, checkpoint_files  # noqa: E402
from cifar_edge.train.trainer import train  # noqa: E402
from cifar_edge.train.whitening import whitening_kernel, with_identity  # noqa: E402

# 4 steps of 64 per epoch; the whitening bias trains for 3 epochs (12 steps), then freezes.
AIR = dict(batch_size=64, limit_train=256, limit_test=100)


def air_settings(epochs: int = 4, **overrides) -> TrainSettings:
    return TrainSettings.for_model("airbench94", epochs=epochs, **{**AIR, **overrides})


def expected_whitening(dataset) -> np.ndarray:
    images = dataset.train.balanced_subset(AIR["limit_train"], 0).images.astype(np.float32) / 255
    return whitening_kernel((images - np.array(CIFAR10_MEAN, np.float32)) / np.array(CIFAR10_STD, np.float32))


class WeightsPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.kernels, self.biases = [], []

    def on_epoch_end(self, epoch, logs=None):
        layer = self.model.get_layer("whiten")
        self.kernels.append(keras.ops.convert_to_numpy(layer.kernel).copy())
        self.biases.append(keras.ops.convert_to_numpy(layer.bias).copy())


@pytest.fixture(scope="module")
def air_run(small_dataset, tmp_path_factory, request):
    watcher = WeightsPerEpoch()
    original = trainer._RunRecorder.on_epoch_end

    def watched(self, epoch, logs=None):
        watcher.set_model(self.model)
        watcher.on_epoch_end(epoch, logs)
        original(self, epoch, logs)

    patch = pytest.MonkeyPatch()
    patch.setattr(trainer._RunRecorder, "on_epoch_end", watched)
    try:
        result = train(air_settings(), small_dataset, tmp_path_factory.mktemp("air"), verbose=0)
    finally:
        patch.undo()
    return result, watcher


def test_whitening_kernel_is_set_from_the_data_and_unchanged_by_training(air_run, small_dataset):
    result, watcher = air_run
    expected = expected_whitening(small_dataset)
    for kernel in watcher.kernels:
        np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-6)
    saved = keras.models.load_model(result.files["model.keras"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved.get_layer("whiten").kernel), expected, rtol=1e-5, atol=1e-6)
    fresh = create_model("airbench94")
    assert not np.allclose(keras.ops.convert_to_numpy(fresh.get_layer("whiten").kernel), expected)


def test_whitening_bias_trains_for_its_epochs_then_freezes(air_run, small_dataset, tmp_path):
    _, watcher = air_run
    biases = watcher.biases
    assert not np.array_equal(biases[0], biases[1]) and not np.array_equal(biases[1], biases[2])
    # After the freeze only lookahead moves it (towards its average), so check the optimizer's schedule:
    # 3 epochs of 4 steps.
    model = create_model("airbench94")
    trainer._compile(model, air_settings().recipe(), steps_per_epoch=4, frozen=("whiten/kernel",))
    assert model.optimizer.frozen_from == {"^whiten/kernel$": 0, "^whiten/bias$": 12}
    assert model.optimizer.lr_multipliers == {"(^|/)beta$": 64.0}


def test_whitening_kernel_whitens_patches():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    images = (rng.normal(size=(400, 6, 6, 12)) @ mixing.T)[..., :3]  # correlated channels
    kernel = whitening_kernel(images, eps=0.0)
    assert kernel.shape == (2, 2, 3, 24)
    patches = np.stack([images[:, r : r + 5, c : c + 5] for r in range(2) for c in range(2)], axis=3).reshape(-1, 12)
    responses = patches @ kernel[..., :12].reshape(12, 12)
    second_moment = responses.T @ responses / len(responses)
    np.testing.assert_allclose(second_moment, np.eye(12), atol=1e-6)
    np.testing.assert_array_equal(kernel[..., 12:], -kernel[..., :12])


def test_dirac_init_passes_the_first_channels_through():
    kernel = with_identity(np.random.default_rng(0).normal(size=(3, 3, 4, 6)))
    image = np.random.default_rng(1).normal(size=(5, 5, 4))
    centre = np.einsum("hwc,hwco->o", image[1:4, 1:4], kernel)
    np.testing.assert_allclose(centre[:4], image[2, 2])


def test_model_keras_loads_with_plain_keras_and_keeps_the_contract(air_run, small_dataset):
    result, _ = air_run
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({str(result.files['model.keras'])!r})\n"
        "assert not any(name.startswith('cifar_edge') for name in sys.modules)\n"
        "print(m.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape, getattr(m, 'optimizer', None))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "(2, 10) None" in loaded.stdout
    model = keras.models.load_model(result.files["model.keras"])
    assert model.inputs[0].dtype == "uint8"
    probabilities = model.predict(small_dataset.test.images[:5], verbose=0)
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    config = json.loads((result.out_dir / "config.json").read_text())
    assert "--weight-decay 0.00886" in config["command"] and "--tta 6" in config["command"]


def test_metrics_report_tta_and_time_to_accuracy(air_run):
    metrics = air_run[0].metrics
    assert metrics["tta"] == "6" and 0 <= metrics["test_accuracy_tta"] <= 1
    assert set(metrics["seconds_to_test_accuracy"]) == {"90%", "92%", "93%", "94%"}
    history = [{"test_accuracy": a, "wall_seconds": s} for a, s in ((0.85, 10.0), (0.905, 20.0), (0.93, 30.0), (0.92, 40.0))]
    assert trainer._seconds_to_marks(history) == {"90%": 20.0, "92%": 30.0, "93%": 30.0, "94%": None}


def test_resume_keeps_the_freeze_and_the_lookahead_state(small_dataset, tmp_path, monkeypatch):
    out = tmp_path / "air"
    original = trainer._RunRecorder.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer._RunRecorder, "on_epoch_end", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(air_settings(epochs=2), small_dataset, out, verbose=0)
    monkeypatch.undo()
    files = checkpoint_files(out, json.loads((out / "checkpoint" / "state.json").read_text()))
    checkpoint = keras.models.load_model(files / "model.keras")
    assert isinstance(checkpoint.optimizer, GroupSGD)
    assert checkpoint.optimizer.frozen_from["^whiten/kernel$"] == 0
    assert (files / Lookahead.STATE_FILE).is_file()

    result = train(air_settings(epochs=2), small_dataset, out, resume=True, verbose=0)
    model = keras.models.load_model(result.files["model.keras"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("whiten").kernel), expected_whitening(small_dataset),
                               rtol=1e-5, atol=1e-6)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_lookahead_resets_every_weight_to_the_average_bn_statistics_included():
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    lookahead = Lookahead(every=5, decay=0.95, total_steps=100)
    lookahead.set_model(model)
    model.compile(optimizer="sgd")
    lookahead.on_train_begin()
    before = [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]
    moved = [b + 1.0 for b in before]
    for weight, value in zip(model.weights, moved):
        weight.assign(value)
    lookahead.update(0.75)
    for weight, old, new in zip(model.weights, before, moved):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), 0.75 * old + 0.25 * new, rtol=1e-6)
    assert any("moving_mean" in w.path for w in model.weights)


def test_lookahead_steps_on_its_schedule_and_ends_on_the_average():
    lookahead = Lookahead(every=5, decay=0.95, total_steps=10)
    decays = []
    lookahead.update = decays.append
    for batch in range(10):
        lookahead.on_train_batch_end(batch)
    assert decays == [pytest.approx(0.95**5 * 0.5**3), pytest.approx(0.95**5), 1.0]


def test_alternating_flip_inverts_every_image_from_one_epoch_to_the_next(small_dataset):
    images, labels = small_dataset.train.images, small_dataset.train.labels
    batches = TrainingBatches(images, labels, 32, flip=True, shift_pixels=0, seed=3, alternating_flip=True)

    def epoch_images():
        seen = {}
        for index in range(len(batches)):
            chosen = batches._order[index * 32 : (index + 1) * 32]
            for image_index, image in zip(chosen, batches[index][0]):
                seen[int(image_index)] = image
        return seen

    first = epoch_images()
    batches.on_epoch_end()
    second = epoch_images()
    assert set(first) == set(second) == set(range(len(labels)))
    mirrored = [not np.array_equal(first[i], images[i]) for i in first]
    assert 0.3 < np.mean(mirrored) < 0.7, "the first epoch's flips are random"
    for i in first:
        np.testing.assert_array_equal(second[i], first[i][:, ::-1])


def test_drop_last_drops_the_partial_batch(small_dataset):
    images, labels = small_dataset.train.images[:100], small_dataset.train.labels[:100]
    assert len(TrainingBatches(images, labels, 32, flip=False, shift_pixels=0, seed=0, drop_last=True)) == 3
    assert len(TrainingBatches(images, labels, 32, flip=False, shift_pixels=0, seed=0)) == 4


def test_linear_schedule_warms_up_then_decays():
    schedule = LinearWarmupDecay(1.5, total_steps=100, warmup_steps=23, start_factor=0.2, end_factor=0.07)
    values = [float(schedule(step)) for step in (0, 23, 100)]
    assert values == pytest.approx([0.3, 1.5, 0.105])
    assert float(schedule(11)) == pytest.approx(1.5 * (0.2 + 0.8 * 11 / 23))


def test_group_sgd_multiplies_learning_rates_and_freezes():
    kernel, beta = keras.Variable(np.ones(2, np.float32), name="kernel"), keras.Variable(np.ones(2, np.float32), name="beta")
    optimizer = GroupSGD(0.1, lr_multipliers={"(^|/)beta$": 64.0}, frozen_from={"^kernel$": 1})
    gradients = [np.ones(2, np.float32), np.full(2, 0.01, np.float32)]
    optimizer.apply(gradients, [kernel, beta])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), 0.9)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(beta), 1 - 0.1 * 64 * 0.01)
    optimizer.apply(gradients, [kernel, beta])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), 0.9)  # frozen from step 1


def test_weight_decay_conversion_matches_pytorch_coupled_decay():
    """airbench94's coupled decay (PyTorch SGD, weight_decay = wd/lr, Nesterov) against the
    recipe's decoupled Keras decay, on a weight with no loss gradient: equal shrinkage."""
    momentum, steps = AIRBENCH_RECIPE.momentum, 300
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr, wd = 11.5 / kilostep, 0.0153 * 1024 / kilostep
    weight, buffer = 1.0, 0.0
    for _ in range(steps):
        gradient = (wd / lr) * weight
        buffer = momentum * buffer + gradient
        weight -= lr * (gradient + momentum * buffer)
    variable = keras.Variable(np.ones(1, np.float32), name="kernel")
    optimizer = GroupSGD(AIRBENCH_RECIPE.learning_rate, momentum=momentum, nesterov=True, decoupled_decay=AIRBENCH_RECIPE.weight_decay)
    for _ in range(steps):
        optimizer.apply([np.zeros(1, np.float32)], [variable])
    keras_weight = float(keras.ops.convert_to_numpy(variable)[0])
    # The conversion is first order in the per-step shrink s = wd/(1 - mu) = 0.0133. PyTorch's
    # recurrence shrinks by s + mu^2 s^2/(1 - mu) + ... = 0.01415 per step, 6% more; the Keras value
    # matches to that. Copying PyTorch's 5e-4, or a sum/mean slip, is off by 10x or more.
    assert np.log(keras_weight) == pytest.approx(np.log(weight), rel=0.07)
    assert np.log(keras_weight) / steps == pytest.approx(np.log(1 - 1.5 * AIRBENCH_RECIPE.weight_decay), rel=1e-3)
    assert AIRBENCH_RECIPE.learning_rate == pytest.approx(1.5, rel=1e-3)


@pytest.mark.parametrize("mode", list(tta.TTA_MODES))
def test_tta_weights_sum_to_one(mode):
    assert sum(view.weight for view in tta.views(mode)) == pytest.approx(1.0)


def test_tta_views_shift_with_reflection_and_mirror():
    image = np.arange(2 * 4 * 4 * 1).reshape(2, 4, 4, 1)
    shifted = tta.apply_view(image, tta.View(1, 1, False, 1.0))
    np.testing.assert_array_equal(shifted[:, 1:, 1:], image[:, :-1, :-1])
    np.testing.assert_array_equal(shifted[:, 0, 1:], image[:, 1, :-1])  # reflected row
    np.testing.assert_array_equal(tta.apply_view(image, tta.View(0, 0, True, 1.0)), image[:, :, ::-1])


def test_ablation_trains_each_variant_and_tabulates(image_tree, tmp_path, capsys):
    from cifar_edge.train import ablation

    out = tmp_path / "rows.json"
    assert ablation.main(["--data", str(image_tree), "--epochs", "1", "--limit-train", "128", "--limit-test", "50",
                          "--variants", "airbench94", "- whitening", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| airbench94 | 1 |" in table and "| - whitening | 1 |" in table and "+ TTA 6 (same run)" in table
    rows = json.loads(out.read_text())
    assert [row["variant"] for row in rows] == ["airbench94", "- whitening"]
    from cifar_edge.train.models import list_models

    assert "airbench94-ablation" not in {spec.name for spec in list_models()}, "variants leave the registry as it was"
