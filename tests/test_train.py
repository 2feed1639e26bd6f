"""`cifar-train` and the trainer: outputs, resume, bad input, backends."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cifar_edge.train import trainer  # noqa: E402
from cifar_edge.train.cli import main  # noqa: E402
from cifar_edge.train.settings import TrainError, TrainSettings, checkpoint_files  # noqa: E402
from cifar_edge.train.trainer import train  # noqa: E402
from conftest import write_official_tarball  # noqa: E402

OUTPUTS = ("model.keras", "history.csv", "learning_curves.png", "confusion_matrix.png", "metrics.json", "config.json")
TINY = dict(batch_size=64, limit_train=200, limit_test=100)


def tiny_settings(epochs: int = 1, **overrides) -> TrainSettings:
    return TrainSettings.for_model("resnet8", epochs=epochs, **{**TINY, **overrides})


@pytest.fixture(scope="module")
def tiny_run(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(tiny_settings(), small_dataset, out, verbose=0)


def test_run_writes_every_output(tiny_run):
    for name in OUTPUTS:
        assert (tiny_run.out_dir / name).is_file(), name
        assert (tiny_run.out_dir / name).stat().st_size > 0, name
    assert any((tiny_run.out_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    assert not (tiny_run.out_dir / "checkpoint").exists(), "a finished run leaves no checkpoint"
    for png in ("learning_curves.png", "confusion_matrix.png"):
        assert (tiny_run.out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_and_config_describe_the_run(tiny_run, small_dataset):
    metrics = json.loads((tiny_run.out_dir / "metrics.json").read_text())
    assert metrics == tiny_run.metrics
    assert metrics["test_images"] == 100 and metrics["train_images"] == 200
    assert set(metrics["per_class_accuracy"]) == set(small_dataset.class_names)
    assert np.array(metrics["confusion_matrix"]).sum() == 100
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["train_images_per_second"] > 0 and metrics["wall_time_seconds"] > 0
    assert metrics["device"]["backend"] == keras.backend.backend()
    config = json.loads((tiny_run.out_dir / "config.json").read_text())
    assert config["settings"]["model"] == "resnet8" and config["recipe"]["epochs"] == 1
    assert config["command"].startswith("cifar-train --model resnet8 --epochs 1")
    assert "--limit-train 200" in config["command"]
    with (tiny_run.out_dir / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1"]
    assert [row["epoch"] for row in tiny_run.history] == [1]
    assert float(rows[0]["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=0.05)


def test_saved_model_keeps_the_contract_and_loads_without_cifar_edge(tiny_run, small_dataset):
    path = tiny_run.out_dir / "model.keras"
    code = (
        "import sys, keras, numpy as np\n"
        "assert not any(m.startswith('cifar_edge') for m in sys.modules)\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        "p = m.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)\n"
        "print(m.inputs[0].dtype, p.shape, p.dtype, getattr(m, 'optimizer', None))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "uint8 (2, 10) float32 None" in result.stdout
    model = keras.models.load_model(path)
    probabilities = model.predict(small_dataset.test.images[:100], verbose=0)
    accuracy = float(np.mean(probabilities.argmax(1) == small_dataset.test.labels[:100]))
    assert 0.0 <= accuracy <= 1.0


def test_init_from_starts_from_the_given_weights_and_records_the_file(tiny_run, small_dataset, tmp_path):
    source = tiny_run.out_dir / "model.keras"
    # A learning rate too small to move anything: the kernels stay the source's trained ones,
    # which a fresh start with the same seed would not have.
    result = train(tiny_settings(init_from=str(source), learning_rate=1e-9, weight_decay=0.0), small_dataset, tmp_path / "tuned", verbose=0)
    trained = keras.models.load_model(source)
    tuned = keras.models.load_model(result.files["model.keras"])
    pairs = [(a, b) for a, b in zip(tuned.layers, trained.layers, strict=True) if isinstance(b, keras.layers.Conv2D)]
    assert pairs
    for mine, theirs in pairs:
        np.testing.assert_allclose(mine.kernel.numpy(), theirs.kernel.numpy(), atol=1e-6)
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["init_from"]["path"] == str(source) and len(config["init_from"]["sha256"]) == 64
    assert f"--init-from {source}" in config["command"]


@pytest.mark.parametrize("case", ["other-model", "not-keras", "junk"])
def test_init_from_a_model_that_does_not_fit_is_a_one_line_error(case, tiny_run, image_tree, tmp_path, capsys):
    source = tiny_run.out_dir / ("model.keras" if case == "other-model" else "metrics.json")
    if case == "junk":
        source = tmp_path / "junk.keras"
        source.write_bytes(b"not a zip" * 50)
    argv = ["--model", "resnet8-w20", "--epochs", "1", "--limit-train", "64", "--limit-test", "20",
            "--init-from", str(source), "--data", str(image_tree), "--out", str(tmp_path / "run")]
    if case == "not-keras":  # refused by the flag's type, as argparse refuses a bad flag
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        code = stopped.value.code
    else:
        code = main(argv)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cifar-train: error:") and str(source) in err[0], err
    expected = {"other-model": "do not fit resnet8", "not-keras": "expected a .keras model", "junk": "not a readable Keras model"}
    assert expected[case] in err[0]


def test_a_fine_tune_resumes_without_its_init_file_and_keeps_its_record(tiny_run, small_dataset, tmp_path, monkeypatch):
    source = tmp_path / "start.keras"
    source.write_bytes((tiny_run.out_dir / "model.keras").read_bytes())
    out = tmp_path / "tuned"
    _interrupted_run(small_dataset, out, monkeypatch, init_from=str(source))
    record = json.loads((out / "checkpoint" / "state.json").read_text())["init_from"]
    source.unlink()  # the weights are in the checkpoint now
    train(tiny_settings(epochs=2, init_from=str(source)), small_dataset, out, resume=True, verbose=0)
    assert json.loads((out / "config.json").read_text())["init_from"] == record and len(record["sha256"]) == 64


@pytest.mark.parametrize(("flag", "policy"), [("on", "mixed_float16"), ("bfloat16", "mixed_bfloat16")])
def test_mixed_precision_trains_in_it_and_delivers_a_float32_model(flag, policy, small_dataset, tmp_path):
    # One step on 20 test images: float16 arithmetic is emulated on CPUs (four steps on 100 took
    # 97 s here, one on 20 took 34 s, both under the same load), and one step shows the policy as well.
    result = train(tiny_settings(mixed_precision=flag, limit_train=64, limit_test=20), small_dataset, tmp_path / flag, verbose=0)
    assert result.metrics["precision_policy"] == policy
    assert keras.mixed_precision.global_policy().name == "float32", "the run put the process-wide policy back"
    model = keras.models.load_model(result.files["model.keras"])
    # Exporters and runtimes get a float32 graph, whatever the training arithmetic was.
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    test = small_dataset.test.balanced_subset(20, 0)
    probabilities = model.predict(test.images, verbose=0)
    assert probabilities.dtype == np.float32
    # The reported figure is the delivered model's.
    assert result.metrics["test_accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(1) == test.labels)))


def test_throughput_compares_precisions_side_by_side(small_dataset, capsys, image_tree):
    from cifar_edge.train import throughput

    assert throughput.main(["--models", "resnet8", "--mixed-precision", "off", "bfloat16", "--epochs", "2",
                            "--images", "100", "--batch-size", "50", "--data", str(image_tree)]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| `resnet8`")]
    assert [row.split("|")[2].strip() for row in rows] == ["float32", "mixed_bfloat16"]


def test_resume_after_an_interruption_matches_an_uninterrupted_run(small_dataset, tmp_path, monkeypatch):
    reference = train(tiny_settings(epochs=2), small_dataset, tmp_path / "reference", verbose=0)

    original = trainer._RunRecorder.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer._RunRecorder, "on_epoch_end", killed_after_first_epoch)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_settings(epochs=2), small_dataset, out, verbose=0)
    monkeypatch.undo()
    assert (out / "checkpoint" / "state.json").is_file()
    assert not (out / "model.keras").exists()

    with pytest.raises(TrainError, match="--resume"):
        train(tiny_settings(epochs=2), small_dataset, out, verbose=0)

    resumed = train(tiny_settings(epochs=2), small_dataset, out, resume=True, verbose=0)
    with (out / "history.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert not (out / "checkpoint").exists()
    with (reference.out_dir / "history.csv").open() as file:
        expected = list(csv.DictReader(file))
    # Same batches, same optimizer state: epoch 2 trains as if nothing had happened.
    assert float(rows[1]["loss"]) == pytest.approx(float(expected[1]["loss"]), rel=0.02)
    assert float(rows[1]["learning_rate"]) == pytest.approx(float(expected[1]["learning_rate"]), rel=1e-5)
    assert resumed.metrics["test_accuracy"] == pytest.approx(reference.metrics["test_accuracy"], abs=0.05)


def test_cli_trains_and_reports(image_tree, tmp_path, capsys):
    out = tmp_path / "cli-run"
    code = main(["--model", "resnet8", "--epochs", "1", "--limit-train", "100", "--limit-test", "50",
                 "--batch-size", "50", "--data", str(image_tree), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and str(out) in printed
    for name in OUTPUTS:
        assert (out / name).is_file()


def test_cli_resume_uses_the_saved_settings(small_dataset, image_tree, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(small_dataset, out, monkeypatch)
    assert main(["--resume", "--out", str(out), "--epochs", "5", "--data", str(image_tree)]) == 2
    assert "differs from the run being resumed" in capsys.readouterr().err
    assert main(["--resume", "--out", str(out), "--data", str(image_tree)]) == 0
    assert (out / "model.keras").is_file()


def test_resume_may_change_the_precision_and_records_the_switch(small_dataset, image_tree, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(small_dataset, out, monkeypatch, epochs=3, mixed_precision="bfloat16")
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["precision_history"] == [{"from_epoch": 1, "policy": "mixed_bfloat16"}]
    # An older checkpoint without the record: the policy its layers were saved with stands in.
    del state["precision_history"]
    (out / "checkpoint" / "state.json").write_text(json.dumps(state))
    monkeypatch.setattr(trainer._RunRecorder, "on_epoch_end", _interrupt_after(trainer._RunRecorder.on_epoch_end))
    # Epoch 2 in float32, then killed again.
    assert main(["--resume", "--out", str(out), "--mixed-precision", "off", "--data", str(image_tree)]) == 130
    monkeypatch.undo()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and state["settings"]["mixed_precision"] == "off"
    model = keras.models.load_model(checkpoint_files(out, state) / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert main(["--resume", "--out", str(out), "--epochs", "5", "--data", str(image_tree)]) == 2
    assert "only --mixed-precision may change" in capsys.readouterr().err
    assert main(["--resume", "--out", str(out), "--data", str(image_tree)]) == 0  # goes on in float32, not switched again
    history = [{"from_epoch": 1, "policy": "mixed_bfloat16"}, {"from_epoch": 2, "policy": "float32"}]
    assert json.loads((out / "metrics.json").read_text())["precision_history"] == history


def test_resume_refuses_other_data_and_defaults_to_its_own(small_dataset, image_tree, official_tarball, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(small_dataset, out, monkeypatch)
    assert main(["--resume", "--out", str(out), "--data", str(official_tarball)]) == 2
    assert "differs from the data of the run" in capsys.readouterr().err
    monkeypatch.delenv("CIFAR10_DATA", raising=False)
    assert main(["--resume", "--out", str(out)]) == 0  # no --data: the run's own
    assert json.loads((out / "config.json").read_text())["data"]["source"] == small_dataset.source


@pytest.mark.parametrize("damage", ["empty-state", "list-state", "unknown-model", "corrupt-model", "missing-model"])
def test_a_damaged_checkpoint_is_a_one_line_error(damage, small_dataset, image_tree, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupted_run(small_dataset, out, monkeypatch)
    state_path = out / "checkpoint" / "state.json"
    model_path = checkpoint_files(out, json.loads(state_path.read_text())) / "model.keras"
    if damage == "empty-state":
        state_path.write_text("{}")
    elif damage == "list-state":
        state_path.write_text("[1, 2]")
    elif damage == "unknown-model":
        state = json.loads(state_path.read_text())
        state["settings"]["model"] = "resnet9000"
        state_path.write_text(json.dumps(state))
    elif damage == "corrupt-model":
        model_path.write_bytes(b"not a zip")
    else:
        model_path.unlink()
    assert main(["--resume", "--out", str(out), "--data", str(image_tree)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cifar-train: error:"), err


def test_zoom_out_shrinks_the_chosen_images_onto_a_background():
    from cifar_edge.train.pipeline import ZOOM_OUT_MIN_SCALE, zoom_out

    images = np.full((64, 32, 32, 3), 200, np.uint8)
    backgrounds = np.full((1, 32, 32, 3), 7, np.uint8)
    rng = np.random.default_rng(0)
    assert zoom_out(images, backgrounds, rng, 0.0) is images
    out = zoom_out(images, backgrounds, rng, 1.0)
    assert np.all(images == 200), "the input is not changed in place"
    assert set(np.unique(out)) <= {7, 200}
    for image in out[..., 0]:
        rows, cols = np.nonzero(image == 200)
        side = rows.max() - rows.min() + 1
        # One square of the subject, at least the minimum scale, the rest background.
        assert cols.max() - cols.min() + 1 == side and len(rows) == side * side
        assert round(32 * ZOOM_OUT_MIN_SCALE) <= side <= 32
    assert (out == 7).any(axis=(1, 2, 3)).mean() > 0.9, "nearly every image lost some of its side"
    share = np.mean([(zoom_out(images, backgrounds, rng, 0.3) == 7).any(axis=(1, 2, 3)).mean() for _ in range(20)])
    assert 0.2 < share < 0.4


def test_zoom_out_leaves_the_order_shifts_and_flips_of_every_batch_as_they_were(small_dataset):
    from cifar_edge.train.pipeline import TrainingBatches

    def batches(zoom):
        return TrainingBatches(small_dataset.train.images, small_dataset.train.labels, 32, flip=True, shift_pixels=4,
                               seed=7, zoom_out=zoom)

    plain, barely, always = batches(0.0), batches(1e-12), batches(1.0)
    for index in range(len(plain)):
        assert np.array_equal(plain[index][0], barely[index][0]), "its draws use a stream of their own"
        assert np.array_equal(plain[index][1], always[index][1])
    assert not np.array_equal(plain[0][0], always[0][0])


def test_batches_depend_only_on_seed_epoch_and_index(small_dataset):
    from cifar_edge.train.pipeline import TrainingBatches

    def batches(first_epoch):
        return TrainingBatches(small_dataset.train.images, small_dataset.train.labels, 32, flip=True, shift_pixels=4,
                               seed=7, first_epoch=first_epoch)

    uninterrupted = batches(0)
    first_epoch = [uninterrupted[i][0] for i in range(len(uninterrupted))]
    uninterrupted.on_epoch_end()
    resumed = batches(1)
    for index in range(len(resumed)):
        assert np.array_equal(resumed[index][0], uninterrupted[index][0])
        assert np.array_equal(resumed[index][1], uninterrupted[index][1])
    assert not np.array_equal(first_epoch[0], uninterrupted[0][0]), "each epoch reshuffles"


def test_a_kill_between_the_model_and_its_state_resumes_from_the_previous_epoch(small_dataset, tmp_path, monkeypatch):
    # state.json is the commit point: a kill after epoch 2's model was written but before its
    # state leaves epoch 1's state with epoch 1's weights, not epoch 2's weights under "epoch 1".
    out = tmp_path / "run"
    original = trainer.write_json

    def killed_before_the_second_state(path, data):
        if Path(path).name == "state.json" and data["epoch"] == 2:
            raise KeyboardInterrupt
        original(path, data)

    monkeypatch.setattr(trainer, "write_json", killed_before_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_settings(epochs=3), small_dataset, out, verbose=0)
    monkeypatch.undo()
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1
    saved = keras.models.load_model(checkpoint_files(out, state) / "model.keras")
    steps_per_epoch = -(-TINY["limit_train"] // TINY["batch_size"])
    assert int(saved.optimizer.iterations.numpy()) == steps_per_epoch * state["epoch"]

    resumed = train(tiny_settings(epochs=3), small_dataset, out, resume=True, verbose=0)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert not (out / "checkpoint").exists()


def test_a_checkpoint_in_the_older_layout_resumes_and_is_replaced(small_dataset, tmp_path, monkeypatch):
    # Runs checkpointed before per-epoch folders kept model.keras beside state.json.
    out = tmp_path / "run"
    _interrupted_run(small_dataset, out, monkeypatch, epochs=3)
    checkpoint = out / "checkpoint"
    state = json.loads((checkpoint / "state.json").read_text())
    for entry in checkpoint_files(out, state).iterdir():
        entry.rename(checkpoint / entry.name)
    checkpoint_files(out, state).rmdir()
    del state["folder"]
    del state["settings"]["zoom_out"]  # a field added since: it defaults to off
    (checkpoint / "state.json").write_text(json.dumps(state))

    monkeypatch.setattr(trainer._RunRecorder, "on_epoch_end", _interrupt_after(trainer._RunRecorder.on_epoch_end))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_settings(epochs=3), small_dataset, out, resume=True, verbose=0)
    monkeypatch.undo()
    assert sorted(entry.name for entry in checkpoint.iterdir()) == ["epoch-0002", "state.json"]
    resumed = train(tiny_settings(epochs=3), small_dataset, out, resume=True, verbose=0)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]


def _interrupted_run(dataset, out, monkeypatch, epochs: int = 2, **overrides) -> None:
    """A run killed right after its first checkpoint."""
    monkeypatch.setattr(trainer._RunRecorder, "on_epoch_end", _interrupt_after(trainer._RunRecorder.on_epoch_end))
    with pytest.raises(KeyboardInterrupt):
        train(tiny_settings(epochs=epochs, **overrides), dataset, out, verbose=0)
    monkeypatch.undo()


def _interrupt_after(on_epoch_end):
    def wrapped(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        raise KeyboardInterrupt

    return wrapped


def test_dry_run_prints_summaries_and_writes_nothing(image_tree, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["--model", "vgg3-plus", "--data", str(image_tree), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "airplane        30      10" in printed and "total          300     100" in printed
    assert "training would use 300 train and 100 test images" in printed
    assert "Total params" in printed
    assert "Recipe(" not in printed and "\n  epochs: 400\n" in printed and "\n  learning rate: 0.001\n" in printed
    assert not out.exists()


def test_help_names_model_and_out_as_required():
    from cifar_edge.train.cli import build_parser

    usage = build_parser().format_usage()
    assert "--model NAME --out DIR" in usage and "[--model" not in usage and "[--out" not in usage


def test_the_parser_has_one_flag_per_settings_field():
    # RUN_FLAGS and TrainSettings.command() derive from the fields; the parser must not drift from them.
    from cifar_edge.train.cli import build_parser
    from cifar_edge.train.settings import RUN_FLAGS

    flags = {action.dest for action in build_parser()._actions}
    assert set(RUN_FLAGS) <= flags


def _hostile_pickle_tarball(path: Path, dataset, marker: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return write_official_tarball(path, dataset, {"data_batch_1": pickle.dumps(Payload(), protocol=2)})


def _escaping_tarball(path: Path, image_tree: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        archive.add(image_tree / "train", arcname="train")
        archive.add(image_tree / "test", arcname="test")
        info = tarfile.TarInfo("../escaped.txt")
        data = b"should never be written"
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("hostile", ["pickle", "escape"])
def test_dry_run_on_a_hostile_tarball_fails_in_one_line(hostile, small_dataset, image_tree, tmp_path):
    marker = tmp_path / "payload-ran"
    if hostile == "pickle":
        data = _hostile_pickle_tarball(tmp_path / "cifar-10-python.tar.gz", small_dataset, marker)
    else:
        data = _escaping_tarball(tmp_path / "data.tar.gz", image_tree)
    out = tmp_path / "out"
    before = set(tmp_path.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "cifar_edge.train.cli", "--model", "resnet8", "--epochs", "1", "--limit-train", "2000",
         "--data", str(data), "--out", str(out), "--dry-run"],
        capture_output=True, text=True, env={**os.environ, "CIFAR_EDGE_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr  # the whole of stderr: no log line, no TensorFlow chatter
    assert errors[0].startswith("cifar-train: error:") and "refused" in errors[0]
    assert not marker.exists()
    assert set(tmp_path.rglob("*")) == before, "nothing may be written"
    assert not (tmp_path.parent / "escaped.txt").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet9000", "--out", "X"], "known models: vgg1"),
        (["--model", "resnet8", "--epochs", "0", "--out", "X"], "--epochs"),
        (["--model", "resnet8", "--batch-size", "-3", "--out", "X"], "--batch-size"),
        (["--model", "resnet8", "--learning-rate", "nan", "--out", "X"], "--learning-rate"),
        (["--model", "resnet8", "--seed", "-1", "--out", "X"], "--seed"),
        (["--model", "resnet8"], "--out is required"),
        (["--epochs", "1", "--out", "X"], "--model is required"),
        (["--resume", "--out", "NOWHERE"], "nothing to resume"),
        (["--model", "resnet8", "--data", "/no/such/data", "--out", "X"], "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(argv))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cifar-train: error:") and message in err[0]
    assert not (tmp_path / "X").exists()


def test_unwritable_out_is_one_line(image_tree, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["--model", "resnet8", "--epochs", "1", "--data", str(image_tree), "--out", str(blocker / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write there" in err[0]


def test_list_models_through_the_console_script():
    script = Path(sys.executable).with_name("cifar-train")
    if not script.exists():
        pytest.skip("cifar-train is not installed in this environment")
    result = subprocess.run([str(script), "--list-models"], capture_output=True, text=True, check=True)
    for name in ("vgg1", "vgg2", "vgg3", "vgg3-dropout", "vgg3-plus", "deep15", "resnet8", "fast", "airbench94"):
        assert f"\n{name} " in "\n" + result.stdout


def test_fast_reports_test_time_flip_accuracy(small_dataset, tmp_path, tiny_run):
    result = train(
        TrainSettings.for_model("fast", epochs=1, batch_size=50, limit_train=100, limit_test=50),
        small_dataset, tmp_path / "fast", verbose=0,
    )
    test = small_dataset.test.balanced_subset(50, 0)
    model = keras.models.load_model(result.files["model.keras"])
    averaged = model.predict(test.images, verbose=0) + model.predict(test.images[:, :, ::-1], verbose=0)
    expected = float(np.mean(averaged.argmax(1) == test.labels))
    assert result.metrics["tta"] == "flip"
    assert result.metrics["test_accuracy_tta"] == pytest.approx(expected, abs=0.021)  # one image of 50 may tip
    assert "test_accuracy_tta" not in tiny_run.metrics  # resnet8's recipe does not ask for it


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax for the KERAS_BACKEND=jax run")
@pytest.mark.parametrize(("model_name", "epochs"), [("resnet8", 1), ("airbench94", 2)])
def test_jax_backend_trains_a_model_that_tensorflow_loads(model_name, epochs, image_tree, tmp_path, small_dataset):
    out = tmp_path / "jax-run"
    result = subprocess.run(
        [sys.executable, "-m", "cifar_edge.train.cli", "--model", model_name, "--epochs", str(epochs), "--limit-train", "128",
         "--batch-size", "64", "--limit-test", "50", "--data", str(image_tree), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["device"]["backend"] == "jax"
    assert keras.backend.backend() == "tensorflow"
    model = keras.models.load_model(out / "model.keras")
    assert model.predict(small_dataset.test.images[:4], verbose=0).shape == (4, 10)
    if model_name == "airbench94":  # the optimizer's freeze holds on JAX too
        from cifar_edge.train.models import CIFAR10_MEAN, CIFAR10_STD
        from cifar_edge.train.whitening import whitening_kernel

        images = small_dataset.train.balanced_subset(128, 0).images.astype(np.float32) / 255
        expected = whitening_kernel((images - np.array(CIFAR10_MEAN, np.float32)) / np.array(CIFAR10_STD, np.float32))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("whiten").kernel), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="MirroredStrategy is TensorFlow's")
def test_mirrored_strategy_runs_on_the_local_devices(small_dataset, tmp_path):
    result = train(tiny_settings(distribute="mirrored"), small_dataset, tmp_path / "mirrored", verbose=0)
    assert (result.out_dir / "model.keras").is_file()


def test_holdout_leaves_the_same_images_out_and_reports_them(small_dataset, tmp_path):
    result = train(TrainSettings.for_model("resnet8", epochs=1, batch_size=64, limit_test=50, holdout=50), small_dataset, tmp_path, verbose=0)
    rest, held = small_dataset.train.balanced_split(50, 0)
    assert len(rest) + len(held) == len(small_dataset.train) and np.all(np.bincount(held.labels, minlength=10) == 5)
    together = np.concatenate([rest.images, held.images]).reshape(len(small_dataset.train), -1)
    assert len(np.unique(together, axis=0)) == len(np.unique(small_dataset.train.images.reshape(len(small_dataset.train), -1), axis=0))
    assert result.metrics["train_images"] == len(small_dataset.train) - 50 and result.metrics["holdout_images"] == 50
    assert 0.0 <= result.metrics["holdout_accuracy"] <= 1.0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data"]["holdout"] == {"images": 50, "seed": 0, "sha256": held.fingerprint()}
    assert "--holdout 50" in config["command"]
    with pytest.raises(TrainError, match="only"):
        train(TrainSettings.for_model("resnet8", epochs=1, holdout=10_000), small_dataset, tmp_path / "too-many", verbose=0)
