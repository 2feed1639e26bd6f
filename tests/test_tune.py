"""`cifar-tune`: the search space, a two-trial search, resume, the latency budget, and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cifar_edge.train.search_space import ResNetSpace, SearchSpace, TuneError, TuneSettings
from cifar_edge.train.tune_cli import main

pytest.importorskip("keras_tuner")

# Two or three small blocks and no dense layers: each trial trains in a second or two.
TINY = SearchSpace(blocks=(2, 3), filters=(32, 32), dense_layers=(0, 0), learning_rates=(0.01,))
# ResNets of 8/16/32 or 12/24/48 filters: as quick.
TINY_RESNET = ResNetSpace(widths=(8, 12), separable=(False,), learning_rates=(0.05,))


def fake_latency(table: dict[int, float]):
    """Latency by the number of VGG blocks (convolutions / 2), in place of timing on this machine."""
    calls = []

    def latency_of(model) -> float:
        blocks = sum(1 for layer in model.layers if layer.__class__.__name__ == "Conv2D") // 2
        calls.append(blocks)
        return table[blocks]

    latency_of.calls = calls
    return latency_of


def test_a_two_trial_search_writes_every_output(small_dataset, tmp_path):
    from cifar_edge.export.exporter import load_keras_model
    from cifar_edge.train.tune import tune

    settings = TuneSettings(max_trials=2, epochs=1, space=TINY, latency_budget_ms=1.0)
    result = tune(settings, small_dataset, tmp_path, latency_of=fake_latency({2: 0.2, 3: 0.4}))
    assert [t["trial"] for t in result.trials] == ["0", "1"]
    for trial in result.trials:
        assert trial["status"] == "ok" and 0 <= trial["val_accuracy"] <= 1 and trial["epochs"] == 1
        assert trial["latency_ms"] in (0.2, 0.4) and trial["params"] > 0 and trial["macs"] > trial["params"]
    assert result.best["trial"] in ("0", "1") and 0 <= result.best["test_accuracy"] <= 1
    model = load_keras_model(result.files["best.keras"])  # the export's own contract check
    probabilities = model.predict(small_dataset.test.images[:4], verbose=0)
    assert probabilities.shape == (4, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    with open(tmp_path / "trials.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert "(best)" in (tmp_path / "trials.md").read_text() and (tmp_path / "trials.png").stat().st_size > 5_000
    assert json.loads((tmp_path / "search.json").read_text())["status"] == "finished"


def test_the_validation_split_comes_from_training_images_only(small_dataset):
    from cifar_edge.train.tune import carve_validation

    fit, validation = carve_validation(small_dataset, TuneSettings(limit_train=200))
    assert len(fit) + len(validation) == 200 and len(validation) == 20
    assert np.all(validation.class_counts() == 2), "class-balanced"
    fit_rows = {image.tobytes() for image in fit.images}
    assert not any(image.tobytes() in fit_rows for image in validation.images)
    train_rows = {image.tobytes() for image in small_dataset.train.images}
    assert all(image.tobytes() in train_rows for image in validation.images)


def test_over_budget_candidates_are_rejected_untrained_and_never_win(small_dataset, tmp_path):
    from cifar_edge.train.tune import tune

    settings = TuneSettings(max_trials=4, epochs=1, space=TINY, latency_budget_ms=0.3)
    result = tune(settings, small_dataset, tmp_path, latency_of=fake_latency({2: 0.2, 3: 0.5}))
    statuses = {t["blocks"]: t["status"] for t in result.trials}
    assert statuses == {2: "ok", 3: "rejected: latency"}, "the seeded search draws both sizes"
    for trial in result.trials:
        if trial["status"] != "ok":
            assert trial["val_accuracy"] is None and trial["epochs"] == 0 and trial["latency_ms"] == 0.5
    assert result.best["blocks"] == 2
    assert "rejected: latency" in (tmp_path / "trials.md").read_text()


def test_a_budget_only_the_smallest_model_meets_ends_with_no_best_model(small_dataset, tmp_path):
    from cifar_edge.train.tune import tune

    # The smallest model (2 blocks) passes the up-front check; every trial drawn is then 3 blocks.
    space = SearchSpace(blocks=(3, 3), filters=(32, 32), dense_layers=(0, 0), learning_rates=(0.01,))
    settings = TuneSettings(max_trials=1, epochs=1, space=space, latency_budget_ms=0.3)
    latency = fake_latency({3: 0.5})
    with pytest.raises(TuneError, match="even the smallest model in the search space takes 0.500 ms"):
        tune(settings, small_dataset, tmp_path / "a", latency_of=latency)
    assert latency.calls == [3], "checked before any trial"
    assert not (tmp_path / "a" / "search.json").exists()


def test_a_search_with_no_trial_in_budget_has_no_best(small_dataset, tmp_path):
    from cifar_edge.train.tune import tune

    first_call = iter([0.1])

    def latency_of(model):  # the up-front check passes, every trial misses
        return next(first_call, 0.9)

    settings = TuneSettings(max_trials=1, epochs=1, space=TINY, latency_budget_ms=0.3)
    result = tune(settings, small_dataset, tmp_path, latency_of=latency_of)
    assert result.best is None and "best.keras" not in result.files and not (tmp_path / "best.keras").exists()
    assert "No trial met the limits" in (tmp_path / "trials.md").read_text()


def test_max_params_rejects_before_training(small_dataset, tmp_path):
    from cifar_edge.train.tune import build_candidate, tune

    sizes = {blocks: build_candidate(SearchSpace(blocks=(blocks, blocks), filters=(32, 32), dense_layers=(0, 0)).smallest()).count_params()
             for blocks in (2, 3)}
    larger = max(sizes, key=sizes.get)
    settings = TuneSettings(max_trials=4, epochs=1, space=TINY, max_params=min(sizes.values()))
    result = tune(settings, small_dataset, tmp_path)
    statuses = {t["blocks"]: t["status"] for t in result.trials}
    assert statuses[larger] == "rejected: params" and statuses[5 - larger] == "ok"
    assert all(t["latency_ms"] is None for t in result.trials), "no budget, nothing timed"


def test_an_interrupted_search_resumes_where_it_stopped(small_dataset, tmp_path):
    from cifar_edge.train.tune import tune

    settings = TuneSettings(max_trials=3, epochs=1, space=TINY, latency_budget_ms=1.0)
    calls = {"n": 0}

    def interrupted(model):
        calls["n"] += 1
        if calls["n"] == 3:  # the up-front check, trial 0, then a Ctrl-C while trial 1 starts
            raise KeyboardInterrupt
        return 0.2

    with pytest.raises(KeyboardInterrupt):
        tune(settings, small_dataset, tmp_path, latency_of=interrupted)
    assert [p.stem for p in sorted((tmp_path / "tuner" / "records").glob("*.json"))] == ["0"]
    with pytest.raises(TuneError, match="already holds a search"):
        tune(settings, small_dataset, tmp_path, latency_of=lambda model: 0.2)
    result = tune(settings, small_dataset, tmp_path, resume=True, latency_of=lambda model: 0.2)
    assert [t["trial"] for t in result.trials] == ["0", "1", "2"], "trial 0 kept, 1 rerun, 2 added"
    with pytest.raises(TuneError, match="epochs 2 differs"):
        tune(TuneSettings(max_trials=3, epochs=2, space=TINY, latency_budget_ms=1.0), small_dataset, tmp_path, resume=True)


@pytest.mark.parametrize("space, message", [
    (SearchSpace(blocks=(4, 2)), "--blocks 4-2 is empty"),
    (SearchSpace(blocks=(2, 6)), "at most 5|lie in 1-5"),
    (SearchSpace(filters=(40, 60)), "no multiple of 32"),
    (SearchSpace(dense_units=(10, 20), dense_layers=(1, 2)), "no multiple of 64"),
    (SearchSpace(dropout=(0.2, 1.0)), "--dropout"),
    (SearchSpace(learning_rates=()), "--learning-rates"),
])
def test_empty_or_contradictory_spaces_are_one_line_errors(space, message):
    with pytest.raises(TuneError, match=message):
        space.check()


@pytest.mark.parametrize("argv, message", [
    (["--filters", "300-310"], "no multiple of 32"),
    (["--blocks", "two"], "range of whole numbers"),
    (["--latency-budget-ms", "0"], "positive number"),
    (["--tuner", "grid"], "invalid choice"),
    (["--resume"], "holds no search to continue"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    try:
        code = main(["--out", str(tmp_path / "out"), "--data", str(tmp_path / "unused"), *argv])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("tuner", ["hyperband", "bayesian"])
def test_every_tuner_runs_under_the_budget(tuner, small_dataset, tmp_path):
    from cifar_edge.train.tune import tune

    settings = TuneSettings(tuner=tuner, max_trials=3, epochs=3, space=TINY, latency_budget_ms=0.3)
    result = tune(settings, small_dataset, tmp_path, latency_of=fake_latency({2: 0.2, 3: 0.5}))
    assert len(result.trials) == 3
    assert all(t["status"] == ("ok" if t["blocks"] == 2 else "rejected: latency") for t in result.trials)
    assert all(1 <= t["epochs"] <= 3 for t in result.trials if t["status"] == "ok")
    assert result.best is None or result.best["blocks"] == 2


def test_a_budget_needs_the_latency_function_passed_in(small_dataset, tmp_path):
    # train/ does not time models itself (that needs the exporter): cifar-tune's CLI passes int8_latency in.
    from cifar_edge.train.tune import tune

    with pytest.raises(TuneError, match="latency_of"):
        tune(TuneSettings(max_trials=1, epochs=1, space=TINY, latency_budget_ms=1.0), small_dataset, tmp_path)


def test_the_cli_times_candidates_with_int8_latency(small_dataset, image_tree, tmp_path, monkeypatch, capsys):
    from cifar_edge.train import int8_timing

    timed = []

    def int8_latency(calibration, threads):
        timed.append(len(calibration))
        return lambda model: 1e6  # every candidate over budget: nothing trains

    monkeypatch.setattr(int8_timing, "int8_latency", int8_latency)
    code = main(["--out", str(tmp_path / "out"), "--data", str(image_tree), "--latency-budget-ms", "1", "--max-trials", "1",
                 "--blocks", "2-2", "--filters", "32-32", "--dense-layers", "0-0"])
    assert code == 2 and timed == [100]
    assert "even the smallest model" in capsys.readouterr().err


def resnet_latency(table: dict[int, float]):
    """Latency by a ResNet's stem width, in place of timing on this machine."""
    def latency_of(model) -> float:
        stem = next(layer for layer in model.layers if layer.__class__.__name__ == "Conv2D")
        return table[stem.filters]

    return latency_of


def test_a_resnet_search_writes_every_output_and_rejects_over_budget_widths(small_dataset, tmp_path):
    from cifar_edge.export.exporter import load_keras_model
    from cifar_edge.train.tune import tune

    settings = TuneSettings(max_trials=4, epochs=1, space=TINY_RESNET, latency_budget_ms=0.3)
    result = tune(settings, small_dataset, tmp_path, latency_of=resnet_latency({8: 0.2, 12: 0.5}))
    statuses = {t["widths"]: t["status"] for t in result.trials}
    assert statuses == {"8/16/32": "ok", "12/24/48": "rejected: latency"}, "the seeded search draws both widths"
    assert result.best["widths"] == "8/16/32" and result.best["depth"] == 1 and result.best["separable"] is False
    model = load_keras_model(result.files["best.keras"])
    assert model.predict(small_dataset.test.images[:2], verbose=0).shape == (2, 10)
    with open(tmp_path / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"widths", "depth", "separable"} <= set(rows[0]) and "blocks" not in rows[0]
    table = (tmp_path / "trials.md").read_text()
    assert "of resnet networks" in table and "| Widths | Blocks per stage | Separable |" in table
    assert json.loads((tmp_path / "search.json").read_text())["settings"]["space"]["family"] == "resnet"


@pytest.mark.parametrize("space", [SearchSpace(blocks=(2, 3)), ResNetSpace(widths=(16, 20), depth=(1, 2))])
def test_settings_come_back_from_search_json_with_their_family(space):
    settings = TuneSettings(space=space)
    assert TuneSettings.from_dict(json.loads(json.dumps(settings.as_dict()))) == settings


def test_a_search_saved_before_families_reads_as_vgg():
    data = TuneSettings().as_dict()
    del data["space"]["family"]
    assert TuneSettings.from_dict(data).space == SearchSpace()


@pytest.mark.parametrize("space, message", [
    (ResNetSpace(widths=(24, 16)), "--widths 24-16 is empty"),
    (ResNetSpace(widths=(17, 19)), "no multiple of 4"),
    (ResNetSpace(depth=(1, 4)), "--depth must lie in 1-3"),
    (ResNetSpace(learning_rates=(0.0,)), "--learning-rates"),
])
def test_empty_resnet_spaces_are_one_line_errors(space, message):
    with pytest.raises(TuneError, match=message):
        space.check()


@pytest.mark.parametrize("argv, message", [
    (["--family", "resnet", "--blocks", "2-3"], "--blocks belongs to --family vgg; this search is --family resnet"),
    (["--widths", "16-20"], "--widths belongs to --family resnet; this search is --family vgg"),
    (["--family", "resnet", "--widths", "17-19"], "no multiple of 4"),
    (["--family", "resnet", "--separable", "maybe"], "invalid choice"),
])
def test_cli_family_mistakes_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    test_cli_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys)


def test_resume_keeps_the_family(small_dataset, tmp_path, capsys):
    from cifar_edge.train.tune import tune

    tune(TuneSettings(max_trials=1, epochs=1, space=TINY_RESNET), small_dataset, tmp_path / "out")
    for argv, message in ((["--family", "vgg"], "--family vgg differs from the search being resumed (resnet)"),
                          (["--blocks", "2-2"], "--blocks belongs to --family vgg"),
                          (["--widths", "16-16"], "--widths (16, 16) differs")):
        test_cli_bad_input_is_one_line_and_exit_2(["--resume", *argv], message, tmp_path, capsys)
