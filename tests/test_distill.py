"""Knowledge distillation in `cifar-train`: the loss, the teacher cache and the view grid."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar_edge.runtime.machine import usable_cpus  # noqa: E402
from cifar_edge.train import distill, trainer  # noqa: E402
from cifar_edge.train.cli import main  # noqa: E402
from cifar_edge.train.pipeline import Augmentation, TrainingBatches, ViewGrid, apply_augmentation, draw_augmentation  # noqa: E402
from cifar_edge.train.settings import CACHE_FILE, TrainError, TrainSettings  # noqa: E402
from cifar_edge.train.trainer import train  # noqa: E402

OUTPUTS = ("model.keras", "history.csv", "learning_curves.png", "confusion_matrix.png", "metrics.json", "config.json")
TINY = dict(batch_size=64, limit_train=200, limit_test=100)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """The packaged edge model: a real teacher that runs in milliseconds (a copy, so tests may change it)."""
    from cifar_edge.runtime.classifier import packaged_models

    source = next(packaged_models()["edge"].glob("*.tflite"))
    target = tmp_path_factory.mktemp("teacher") / source.name
    shutil.copy(source, target)
    return target


def kd_settings(teacher, epochs: int = 1, **overrides) -> TrainSettings:
    return TrainSettings.for_model("resnet8", epochs=epochs, teacher=str(teacher), **{**TINY, **overrides})


def test_distillation_loss_matches_a_hand_computation():
    alpha, temperature, smoothing = 0.3, 2.0, 0.1
    labels = np.eye(10, dtype=np.float32)[[3, 7]]
    student = np.array([[0.05] * 3 + [0.55] + [0.05] * 6, [0.1] * 10], np.float32)
    teacher_probabilities = np.array([[0.02] * 3 + [0.82] + [0.02] * 6, [0.01] * 7 + [0.91] + [0.01] * 2], np.float32)
    expected = []
    for y, p, q in zip(labels, student, teacher_probabilities, strict=True):
        target = y * (1 - smoothing) + smoothing / 10
        hard = -sum(target[k] * np.log(p[k]) for k in range(10))
        soft_q = q ** (1 / temperature) / sum(q ** (1 / temperature))
        soft_p = p ** (1 / temperature) / sum(p ** (1 / temperature))
        kl = sum(soft_q[k] * np.log(soft_q[k] / soft_p[k]) for k in range(10))
        expected.append(alpha * hard + (1 - alpha) * temperature**2 * kl)
    loss = distill.DistillationLoss(alpha, temperature, smoothing)
    y_true = distill.packed_targets(labels, np.log(teacher_probabilities))
    assert float(loss(y_true, student)) == pytest.approx(np.mean(expected), rel=1e-5)
    # alpha = 1 is the plain smoothed cross-entropy.
    plain = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)(labels, student)
    assert float(distill.DistillationLoss(1.0, temperature, smoothing)(y_true, student)) == pytest.approx(float(plain), rel=1e-5)


def test_view_grid_gives_each_augmented_image_its_own_view(small_dataset):
    grid = ViewGrid.for_recipe(shift_pixels=4, step=2, flip=True)
    assert grid.shifts == (-4, -2, 0, 2, 4) and len(grid) == 50
    assert ViewGrid.for_recipe(4, 0, True).views() == [(0, 0, False), (0, 0, True)]
    images = small_dataset.train.images[:64]
    rng = np.random.default_rng(0)
    drawn = draw_augmentation(rng, len(images), flip=True, shift_pixels=4)
    on_grid = Augmentation(2 * (drawn.dy // 2), 2 * (drawn.dx // 2), drawn.mirrored)
    augmented = apply_augmentation(images, on_grid, pad=4)
    views = grid.views()
    for image, index, original in zip(augmented, grid.index(on_grid), images, strict=True):
        assert np.array_equal(image, grid.batch(original[None], views[index])[0])
    # Off the grid: the nearest view.
    one_off = Augmentation(np.array([1, 3, -3, -1]), np.array([0, -1, 4, 1]), np.array([False, True, False, True]))
    assert [views[i] for i in grid.index(one_off)] == [(0, 0, False), (2, 0, True), (-2, 4, False), (0, 0, True)]
    coarse = ViewGrid.for_recipe(shift_pixels=4, step=4, flip=True)
    ties = Augmentation(np.array([2, -2]), np.array([-2, 2]), np.array([False, False]))
    assert [coarse.views()[i] for i in coarse.index(ties)] == [(0, 0, False), (0, 0, False)]


def test_batches_carry_the_teacher_outputs_of_each_view(small_dataset):
    grid = ViewGrid.for_recipe(shift_pixels=4, step=4, flip=True)
    split = small_dataset.train
    # A fake teacher whose outputs name the image and the view: row (image, view) holds image * 100 + view.
    teacher = (np.arange(len(split))[:, None, None] * 100 + np.arange(len(grid))[None, :, None]).astype(np.float32)
    teacher = np.repeat(teacher, 10, axis=2)
    batches = TrainingBatches(split.images, split.labels, 32, flip=True, shift_pixels=4, seed=1, teacher=teacher, grid=grid)
    images, targets = batches[0]
    assert targets.shape == (len(images), 20)
    chosen = batches._order[:32]
    assert np.array_equal(targets[:, :10].argmax(1), split.labels[chosen])
    # The same draw the batch made (seed, epoch 0, batch 0), mapped to its views by hand.
    drawn = draw_augmentation(np.random.default_rng((1, 0, 0)), 32, flip=True, shift_pixels=4)
    expected_views = [grid.views().index((min((0, 4, -4), key=lambda s: (abs(s - dy), abs(s))),
                                          min((0, 4, -4), key=lambda s: (abs(s - dx), abs(s))), bool(m)))
                      for dy, dx, m in zip(drawn.dy, drawn.dx, drawn.mirrored, strict=True)]
    assert np.array_equal(targets[:, 10], chosen * 100 + np.array(expected_views))
    assert len(set(expected_views)) > 3, "the draw should visit several views"
    with pytest.raises(ValueError, match="view grid"):
        TrainingBatches(split.images, split.labels, 32, flip=True, shift_pixels=4, seed=1, teacher=teacher[:, :3], grid=grid)


def test_one_epoch_distillation_writes_every_output(small_dataset, teacher_file, tmp_path):
    result = train(kd_settings(teacher_file), small_dataset, tmp_path, verbose=0)
    for name in OUTPUTS:
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / CACHE_FILE).is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    teacher = config["teacher"]
    assert teacher["path"] == str(teacher_file) and teacher["sha256"] == distill.sha256_file(teacher_file)
    assert teacher["views"] == 18 and 0.5 < teacher["test_accuracy"] <= 1.0
    assert f"--teacher {teacher_file}" in config["command"] and "--distill-temperature 1.0" in config["command"]
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    cache = distill.TeacherCache.load(tmp_path / CACHE_FILE)
    assert cache.train.shape == (200, 18, 10) and cache.test.shape == (100, 10)
    assert teacher["teacher_threads"] == cache.threads == usable_cpus()
    # The plain view of the cache is what the teacher says of the untouched images.
    from cifar_edge.runtime.engines import open_engine

    train_split = small_dataset.train.balanced_subset(200, 0)
    direct = distill.teacher_log_probabilities(open_engine(teacher_file).predict(train_split.images))
    np.testing.assert_allclose(cache.train[:, cache.grid.views().index((0, 0, False))], direct, atol=1e-5)
    # The shipped model.keras loads with plain Keras: nothing of the loss travels with it.
    assert keras.models.load_model(tmp_path / "model.keras", compile=False).output_shape == (None, 10)


def _interrupted(settings, dataset, out, monkeypatch):
    def stop(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    original = trainer._RunRecorder.on_epoch_end
    monkeypatch.setattr(trainer._RunRecorder, "on_epoch_end", stop)
    with pytest.raises(KeyboardInterrupt):
        train(settings, dataset, out, verbose=0)
    monkeypatch.undo()


def test_resume_reuses_the_cache_and_refuses_a_changed_teacher(small_dataset, image_tree, teacher_file, tmp_path, monkeypatch, capsys):
    teacher = tmp_path / "teacher.tflite"
    shutil.copy(teacher_file, teacher)
    settings = kd_settings(teacher, epochs=2)
    out = tmp_path / "run"
    _interrupted(settings, small_dataset, out, monkeypatch)
    assert (out / CACHE_FILE).is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(distill, "build_cache", no_rebuild)
    resumed = train(settings, small_dataset, out, resume=True, verbose=0)
    assert resumed.metrics["epochs"] == 2 and (out / "model.keras").is_file()

    out2 = tmp_path / "run2"
    monkeypatch.undo()
    _interrupted(settings, small_dataset, out2, monkeypatch)
    data = bytearray(teacher.read_bytes())
    data[-1] ^= 0xFF  # a changed file: same size, another sha256
    teacher.write_bytes(bytes(data))
    assert main(["--resume", "--out", str(out2), "--data", str(image_tree)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed since this run's teacher cache was made" in err[0], err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--distill-alpha", "0.5"], "--distill-alpha needs --teacher"),
        (["--teacher", "/no/such/teacher.tflite"], "no such file"),
        (["--teacher", "TEACHER", "--distill-alpha", "1.5"], "from 0 to 1"),
        (["--teacher", "TEACHER", "--distill-temperature", "0"], "--distill-temperature"),
    ],
)
def test_bad_distillation_flags_are_one_line(extra, message, teacher_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--model", "resnet8", "--out", "X", *[str(teacher_file) if arg == "TEACHER" else arg for arg in extra]]
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "X").exists()


def test_a_teacher_that_breaks_the_contract_is_refused(small_dataset, tmp_path):
    split = small_dataset.train.balanced_subset(20, 0)

    class Logits:
        def predict(self, images, batch_size=256):
            return np.zeros((len(images), 10)) - 3.0

    with pytest.raises(TrainError, match="not probabilities"):
        distill._checked(Logits().predict(split.images), "logits.onnx")
    with pytest.raises(TrainError, match="shape"):
        distill._checked(np.ones((4, 3)) / 3, "three.onnx")


def test_candidates_tabulate_size_and_latency_of_edge_models(image_tree, capsys):
    pytest.importorskip("tensorflow")
    from cifar_edge.train import candidates

    assert candidates.main(["--models", "resnet8", "resnet8-w20", "--data", str(image_tree), "--rounds", "1", "--seconds", "0.2"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row[1].strip() for row in rows] == ["`resnet8`", "`resnet8-w20`"]
    assert rows[0][2].strip() == "78,666" and float(rows[0][5]) == 1.0
    sizes = [float(row[3]) for row in rows]
    assert sizes[0] < sizes[1] < 150  # KB: the wider model is bigger, both within the edge budget


def test_registry_resnet_variants_share_one_builder():
    from cifar_edge.train.models import create_model

    counts = {name: create_model(name).count_params() for name in ("resnet8", "resnet8-w20", "resnet8-sep40", "resnet14-w13")}
    assert counts == {"resnet8": 78_666, "resnet8-w20": 122_170, "resnet8-sep40": 79_290, "resnet14-w13": 117_088}
    assert create_model("resnet8-w20").name == "resnet8-w20"
