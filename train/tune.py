"""`tune()`: a Keras-Tuner architecture search, optionally under a latency budget on this device.

Two families can be searched (`tune_families`): `vgg`, the Keras-Tuner tutorial's space (VGG
blocks, filters per block, dense layers and units) plus dropout, batch norm and the learning
rate; and `resnet`, the edge model's (ResNet-8's layout with its width, blocks per stage and
depthwise-separable convolutions chosen). The objective is accuracy on a
validation split carved from the training images; the test split is touched once, to
report the winner.

With a latency budget, every candidate is converted to `tflite-int8` and timed with the
runtime's LiteRT engine *before* it trains. An int8 model's speed depends on its shapes,
not its weights, so an over-budget candidate is rejected without spending a minute of
training on it: it gets the score -1 (below every accuracy), so it is never the winner,
and the Bayesian tuner still learns that region is out of bounds.

An output folder holds, when finished:

    best.keras          the winner, uncompiled, keeping the model contract (cifar-export takes it)
    trials.csv/.md      every trial: its choices, params, MACs, int8 latency, validation accuracy
    trials.png          validation accuracy against latency (or parameters), the winner starred
    search.json         the settings, the winner and its test accuracy
    tuner/              Keras-Tuner's state, and one record per trial, for --resume
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cifar_edge.runtime.data import Cifar10, Split
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import atomic_path, writable_dir, write_json, write_text
from cifar_edge.runtime.plots import plain_log_x_axis
from cifar_edge.train.search_space import TUNER_DIR, TuneError, TuneSettings, read_search_settings
from cifar_edge.train.tune_families import build_candidate, family_of

PROJECT = "search"
#: Score of a rejected candidate: below any accuracy, so it never wins.
REJECTED = -1.0
BATCH_SIZE = 64


@dataclass(frozen=True)
class TuneResult:
    out_dir: Path
    trials: list[dict]
    best: dict | None
    """The winning trial's record, with `test_accuracy`; None when no trial met the limits."""
    files: dict[str, Path]


# --- candidates ------------------------------------------------------------------------------


def count_macs(model) -> int:
    """Multiply-accumulates of one image through the convolutions and dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # one input channel per output channel
            _, height, width, channels = layer.output.shape
            total += height * width * channels * math.prod(layer.kernel_size)
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            total += height * width * channels * math.prod(layer.kernel_size) * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


# --- the search ------------------------------------------------------------------------------


class _Search:
    """What every trial needs: the splits, the limits, where records go."""

    def __init__(self, settings: TuneSettings, fit_split: Split, validation: Split, records: Path, latency_of, on_trial):
        self.settings, self.fit_split, self.validation, self.records = settings, fit_split, validation, records
        self.latency_of, self.on_trial = latency_of, on_trial
        self.trial_id: str | None = None

    def run(self, values: dict, model, fit_kwargs: dict) -> dict:
        started = time.perf_counter()
        record = {"trial": self.trial_id, **_describe(values, family_of(self.settings.space)), "params": int(model.count_params()), "macs": count_macs(model),
                  "latency_ms": None, "val_accuracy": None, "epochs": 0, "status": "ok"}
        callbacks = fit_kwargs.get("callbacks", [])
        limits = self.settings
        if limits.max_params and record["params"] > limits.max_params:
            record["status"] = "rejected: params"
        elif limits.latency_budget_ms:
            record["latency_ms"] = round(self.latency_of(model), 4)
            if record["latency_ms"] > limits.latency_budget_ms:
                record["status"] = "rejected: latency"
        if record["status"] != "ok":
            # Reported through the tuner's own callbacks, as a one-epoch result, so Keras-Tuner
            # records the score (and Hyperband has weights should it pick this trial up).
            for callback in callbacks:
                callback.set_model(model)
                callback.on_epoch_end(0, {"score": REJECTED})
            return self._finish(record, started, {"score": REJECTED})
        model.compile(optimizer=keras.optimizers.SGD(values["learning_rate"], momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(self.fit_split.images, self.fit_split.labels, batch_size=BATCH_SIZE,
                            epochs=fit_kwargs.get("epochs", limits.epochs), initial_epoch=fit_kwargs.get("initial_epoch", 0),
                            validation_data=(self.validation.images, self.validation.labels),
                            callbacks=[_Score(), *callbacks], verbose=0)
        accuracy = max(history.history["val_accuracy"])
        record.update(val_accuracy=round(float(accuracy), 4), epochs=fit_kwargs.get("epochs", limits.epochs))
        with atomic_path(self.records / f"{self.trial_id}.keras") as temporary:
            model.save(temporary)
        return self._finish(record, started, {"score": float(accuracy)})

    def _finish(self, record: dict, started: float, metrics: dict) -> dict:
        record["seconds"] = round(time.perf_counter() - started, 1)
        write_json(self.records / f"{self.trial_id}.json", record)
        if self.on_trial:
            self.on_trial(record)
        return metrics


class _Score(keras.callbacks.Callback):
    """Names validation accuracy `score`, the objective, in the logs the tuner's callbacks read."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "val_accuracy" in logs:
            logs["score"] = logs["val_accuracy"]


def _describe(values: dict, family) -> dict:
    return {**family.describe(values), "learning_rate": values["learning_rate"], "values": values}


def _tuner(settings: TuneSettings, search: _Search, directory: Path, resume: bool):
    import keras_tuner as kt

    class _Stop(kt.errors.FatalError):
        def __init__(self, error: CifarEdgeError):
            super().__init__(str(error))
            self.error = error

    family = family_of(settings.space)

    class Candidates(kt.HyperModel):
        def build(self, hp):
            return build_candidate(family.choose(hp, settings.space))

        def fit(self, hp, model, *args, **kwargs):
            return search.run(family.choose(hp, settings.space), model, kwargs)

    base = {"random": kt.RandomSearch, "hyperband": kt.Hyperband, "bayesian": kt.BayesianOptimization}[settings.tuner]

    class Tuner(base):
        def run_trial(self, trial, *args, **kwargs):
            search.trial_id = trial.trial_id  # for the trial's record and model file
            try:
                return super().run_trial(trial, *args, **kwargs)
            except CifarEdgeError as error:
                # Keras-Tuner would log it as a failed trial, traceback and all, and go on;
                # our errors are the user's to fix, so the search stops with the one line.
                raise _Stop(error) from None

    common = {"objective": kt.Objective("score", "max"), "seed": settings.seed, "directory": str(directory),
              "project_name": PROJECT, "overwrite": not resume, "max_consecutive_failed_trials": 1}
    if settings.tuner == "hyperband":
        tuner = Tuner(Candidates(), max_epochs=settings.epochs, **common)
        tuner.oracle.max_trials = settings.max_trials  # Hyperband has no limit of its own
    else:
        tuner = Tuner(Candidates(), max_trials=settings.max_trials, **common)
    return tuner


def carve_validation(dataset: Cifar10, settings: TuneSettings) -> tuple[Split, Split]:
    """Training images to fit on, and the disjoint class-balanced validation split that ranks trials."""
    pool = dataset.train.balanced_subset(settings.limit_train, settings.seed) if settings.limit_train else dataset.train
    return pool.balanced_split(max(10, round(len(pool) * settings.validation_fraction)), settings.seed + 1)


def timing_images(dataset: Cifar10, settings: TuneSettings) -> Split:
    """The training images int8 candidates are calibrated and timed on."""
    return carve_validation(dataset, settings)[0].balanced_subset(100, settings.seed)


def check_out_dir(out: Path, settings: TuneSettings, resume: bool) -> None:
    """A new search needs a fresh folder; --resume needs the same search in it."""
    if not resume:
        if (out / "search.json").exists() or (out / TUNER_DIR).exists():
            raise TuneError(f"{out} already holds a search; add --resume to continue it, or choose another --out")
        return
    before, now = read_search_settings(out).as_dict(), settings.as_dict()
    for key in now:
        if key != "max_trials" and before[key] != now[key]:
            raise TuneError(f"--resume: {key} {now[key]} differs from the search in {out} ({before[key]}); only --max-trials may change")


def tune(settings: TuneSettings, dataset: Cifar10, out_dir: str | os.PathLike, *, resume: bool = False,
         latency_of: Callable[[object], float] | None = None, on_trial: Callable[[dict], None] | None = None) -> TuneResult:
    """Run (or continue) the search and write its outputs.

    `latency_of(model)` gives a candidate's latency in ms, needed with a latency budget:
    `cifar-tune` passes `cifar_edge.train.int8_timing.int8_latency` on `timing_images(...)`.
    """
    settings.check()
    out = writable_dir(out_dir)
    check_out_dir(out, settings, resume)
    fit_split, validation = carve_validation(dataset, settings)
    if settings.latency_budget_ms and latency_of is None:
        raise TuneError("a latency budget needs latency_of, a function timing a model (cifar-tune passes int8_latency)")
    _check_reachable(settings, latency_of)
    if not resume:
        write_json(out / "search.json", {"settings": settings.as_dict(), "status": "running"})
    else:  # only --max-trials may have changed
        write_json(out / "search.json", {**json.loads((out / "search.json").read_text()), "settings": settings.as_dict()})
    records = out / TUNER_DIR / "records"
    records.mkdir(parents=True, exist_ok=True)
    search = _Search(settings, fit_split, validation, records, latency_of, on_trial)
    keras.utils.set_random_seed(settings.seed)
    tuner = _tuner(settings, search, out / TUNER_DIR, resume)
    try:
        tuner.search(verbose=0)
    except Exception as error:  # only the wrapper of our own errors is unwrapped; anything else is a bug and shows
        if isinstance(getattr(error, "error", None), CifarEdgeError):
            raise error.error from None
        raise
    return _report(out, settings, dataset, records)


def _check_reachable(settings: TuneSettings, latency_of) -> None:
    """Fail before any training when even the smallest candidate breaks a limit."""
    if not (settings.max_params or settings.latency_budget_ms):
        return
    smallest = build_candidate(settings.space.smallest())
    if settings.max_params and smallest.count_params() > settings.max_params:
        raise TuneError(f"--max-params {settings.max_params}: even the smallest model in the search space has "
                        f"{smallest.count_params():,} parameters; raise the limit or shrink the space")
    if settings.latency_budget_ms:
        latency = latency_of(smallest)
        if latency > settings.latency_budget_ms:
            raise TuneError(f"--latency-budget-ms {settings.latency_budget_ms:g}: even the smallest model in the search space "
                            f"takes {latency:.3f} ms here (int8 TFLite, batch 1); raise the budget or shrink the space")


def read_trials(records: Path) -> list[dict]:
    trials = [json.loads(path.read_text()) for path in sorted(records.glob("*.json"))]
    return sorted(trials, key=lambda t: t["trial"])


def _report(out: Path, settings: TuneSettings, dataset: Cifar10, records: Path) -> TuneResult:
    trials = read_trials(records)
    trained = [t for t in trials if t["status"] == "ok"]
    files = {"trials.csv": out / "trials.csv", "trials.md": out / "trials.md", "search.json": out / "search.json"}
    best = None
    if trained:
        best = dict(max(trained, key=lambda t: (t["val_accuracy"], -(t["latency_ms"] or 0), -t["params"])))
        # Rebuilt uncompiled, as cifar-train delivers: no optimizer state, loads with plain Keras.
        model = build_candidate(best["values"])
        model.set_weights(keras.models.load_model(records / f"{best['trial']}.keras", compile=False).get_weights())
        probabilities = model.predict(dataset.test.images, batch_size=256, verbose=0)
        best["test_accuracy"] = round(float(np.mean(probabilities.argmax(1) == dataset.test.labels)), 4)
        best["test_images"] = len(dataset.test)
        files["best.keras"] = out / "best.keras"
        with atomic_path(files["best.keras"]) as temporary:
            model.save(temporary)
    write_text(files["trials.csv"], trials_csv(trials, settings))
    write_text(files["trials.md"], trials_markdown(trials, settings, best))
    files["trials.png"] = plot_trials(trials, settings, best, out / "trials.png")
    status = "finished" if best else "no trial within the limits"
    write_json(files["search.json"], {"settings": settings.as_dict(), "status": status, "trials": len(trials), "best": best})
    return TuneResult(out, trials, best, files)


# --- outputs ---------------------------------------------------------------------------------

#: The columns every family shares; the family's own go after "status".
COMMON_COLUMNS = ("learning_rate", "params", "macs", "latency_ms", "val_accuracy", "epochs", "seconds")


def trial_columns(settings: TuneSettings) -> tuple[str, ...]:
    return ("trial", "status", *family_of(settings.space).columns, *COMMON_COLUMNS)


def trials_csv(trials: list[dict], settings: TuneSettings) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, trial_columns(settings), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(trials)
    return buffer.getvalue()


def trials_markdown(trials: list[dict], settings: TuneSettings, best: dict | None) -> str:
    limits = []
    if settings.latency_budget_ms:
        limits.append(f"int8 TFLite latency at most {settings.latency_budget_ms:g} ms")
    if settings.max_params:
        limits.append(f"at most {settings.max_params:,} parameters")
    lines = [f"{settings.tuner} search of {settings.space.family} networks, {len(trials)} trials of up to {settings.epochs} epochs; "
             f"limits: {', '.join(limits) or 'none'}. Rejected trials were not trained.", ""]
    family = family_of(settings.space)
    header = ("Trial", "Status", *family.headers, "LR", "Params", "MMACs", "Latency ms", "Val acc", "Epochs", "Seconds")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        mark = " (best)" if best and t["trial"] == best["trial"] else ""
        cells = [t["trial"] + mark, t["status"], *family.cells(t), f"{t['learning_rate']:g}", f"{t['params']:,}", f"{t['macs'] / 1e6:.1f}",
                 "-" if t["latency_ms"] is None else f"{t['latency_ms']:.3f}",
                 "-" if t["val_accuracy"] is None else f"{100 * t['val_accuracy']:.2f}%", t["epochs"], t["seconds"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if best:
        lines += ["", f"Best: trial {best['trial']}, validation {100 * best['val_accuracy']:.2f}%, "
                      f"test {100 * best['test_accuracy']:.2f}% on {best['test_images']:,} test images."]
    else:
        lines += ["", "No trial met the limits, so there is no best model."]
    return "\n".join(lines) + "\n"


def plot_trials(trials: list[dict], settings: TuneSettings, best: dict | None, path: Path) -> Path:
    """Validation accuracy against int8 latency (with a budget) or parameters, log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_latency = bool(settings.latency_budget_ms)
    key, label = ("latency_ms", "int8 TFLite p50 latency at batch 1 (ms, log)") if by_latency else ("params", "parameters (log)")
    figure, axes = plt.subplots(figsize=(7.5, 5))
    trained = [t for t in trials if t["status"] == "ok" and t[key] is not None]
    rejected = [t for t in trials if t["status"] != "ok" and t[key] is not None]
    if trained:
        axes.scatter([t[key] for t in trained], [100 * t["val_accuracy"] for t in trained], label="trained", zorder=3)
        for t in trained:
            axes.annotate(t["trial"], (t[key], 100 * t["val_accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if rejected:
        # Rejected trials have no accuracy: they sit on the floor of the plot.
        floor = min([100 * t["val_accuracy"] for t in trained], default=10.0) - 2
        axes.scatter([t[key] for t in rejected], [floor] * len(rejected), marker="x", color="C3", label="rejected, not trained")
    if best:
        axes.scatter([best[key]], [100 * best["val_accuracy"]], marker="*", s=250, color="C1", label="best", zorder=4)
    if by_latency:
        axes.axvline(settings.latency_budget_ms, color="C3", linestyle="--", alpha=0.6, label="budget")
    plain_log_x_axis(axes)
    axes.set_xlabel(label)
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"cifar-tune: {len(trials)} {settings.tuner} trials")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)
    return path
