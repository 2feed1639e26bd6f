"""`train()`: fit a registry model on CIFAR-10 and write everything a run leaves behind.

A run directory holds, when finished:

    model.keras            the trained model, no optimizer state (loads with plain Keras)
    history.csv            one row per epoch: loss and accuracy, train and test, learning rate, seconds
    learning_curves.png    loss and accuracy, train against test
    confusion_matrix.png   test predictions per true class
    metrics.json           test accuracy overall and per class, wall time, images/s, device
    config.json            everything needed to train it again, with the command
    logs/                  TensorBoard logs

While it runs, `checkpoint/` holds the model with its optimizer state after every epoch
(in `checkpoint/epoch-NNNN/`, named by `checkpoint/state.json`), so `resume=True` continues
a killed run losing at most the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cifar_edge.runtime import tta
from cifar_edge.runtime.data import Cifar10, Split
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import atomic_path, sha256_file, writable_dir, write_json, write_text
from cifar_edge.runtime.metrics import confusion_matrix
from cifar_edge.runtime.plots import plot_confusion_matrix
from cifar_edge.train.device import describe_device, distribution_scope, global_policy, library_versions, precision_policy
from cifar_edge.train.distill import DistillationLoss, TeacherCache, label_accuracy, packed_targets, prepare_teacher
from cifar_edge.train.log_names import SubsetLogNames
from cifar_edge.train.models import Recipe, create_model, get_spec
from cifar_edge.train.optim import GroupSGD, LinearWarmupDecay, Lookahead
from cifar_edge.train.pipeline import TrainingBatches, ViewGrid, one_hot
from cifar_edge.train.report import history_csv, plot_learning_curves
from cifar_edge.train.settings import (
    CHECKPOINT_DIR,
    HOLDOUT_SEED,
    MODEL_FILE,
    TrainError,
    TrainSettings,
    check_run_dir,
    checkpoint_files,
)

log = logging.getLogger("cifar_edge.train")

# Averaging window of the weight EMA: about the last hundred steps.
EMA_MOMENTUM = 0.99
# metrics.json records the wall seconds at which the per-epoch test accuracy first reached each.
ACCURACY_MARKS = (0.90, 0.92, 0.93, 0.94)


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    files: dict[str, Path]
    metrics: dict
    history: list[dict]


def train(settings: TrainSettings, dataset: Cifar10, out_dir: str | os.PathLike, *, resume: bool = False, verbose="auto") -> TrainResult:
    """Train `settings.model` on `dataset` and write the run directory `out_dir`."""
    started = time.perf_counter()
    check_against_data(settings, dataset)  # before --out is made: bad input leaves nothing behind
    created = not Path(out_dir).exists()
    out = writable_dir(out_dir)
    state = check_run_dir(out, resume)

    train_split, holdout = dataset.train.balanced_split(settings.holdout, HOLDOUT_SEED) if settings.holdout else (dataset.train, None)
    train_split = _limit(train_split, settings.limit_train, settings.seed)
    test_split = _limit(dataset.test, settings.limit_test, settings.seed)
    device = describe_device()
    recipe = settings.recipe()
    policy = precision_policy(settings.mixed_precision, device)
    keras.utils.set_random_seed(settings.seed)
    # A new run reads (and checks) the file to start from before anything costly, the teacher
    # cache included; a resumed one has its weights in the checkpoint and its record in the state.
    initial, init_from = None, state.get("init_from") if state else None
    teacher, teacher_info = None, None
    with _removed_if_left_empty(out, created):
        if settings.init_from and state is None:
            initial, init_from = read_initial_weights(settings.init_from, create_model(settings.model))
        if settings.teacher:
            grid = ViewGrid.for_recipe(recipe.shift_pixels, settings.distill_shift_step, recipe.flip)
            teacher, teacher_info = prepare_teacher(out, settings.teacher, grid, train_split, test_split, resume=state is not None)
    with global_policy(policy):
        model, history, earlier_seconds, precision_history = _fit(settings, recipe, train_split, test_split, out, state, started,
                                                                  verbose, dataset.source, teacher, initial, init_from, policy)
    # The delivered model is rebuilt uncompiled (clone_model would keep the compile
    # config), so it carries no optimizer and loads with plain Keras anywhere. It is built
    # outside the mixed policy: the weights are float32 under every policy, and a float32
    # graph is what the exporters and every runtime expect. The test figures below are
    # therefore the shipped model's, not the float16/bfloat16 training graph's.
    final = create_model(settings.model)
    final.set_weights(model.get_weights())

    def predict(images):
        return final.predict(images, batch_size=512, verbose=0)

    probabilities = predict(test_split.images)
    metrics = _metrics(settings, dataset, train_split, test_split, probabilities, history, final.count_params())
    if holdout is not None:
        metrics["holdout_accuracy"] = float(np.mean(np.argmax(predict(holdout.images), axis=1) == holdout.labels))
        metrics["holdout_images"] = len(holdout)
    if settings.tta != "none":
        # Reported beside, not instead of, test_accuracy: model.keras itself sees one view;
        # `cifar-export --tta` builds the same views into the exported files.
        averaged = tta.predict(predict, test_split.images, settings.tta)
        metrics.update(tta=settings.tta, test_accuracy_tta=float(np.mean(np.argmax(averaged, axis=1) == test_split.labels)))
    metrics.update(
        wall_time_seconds=round(earlier_seconds + time.perf_counter() - started, 2),
        precision_policy=policy,
        precision_history=precision_history,
        device=device,
        data_source=dataset.source,
    )
    config = {
        "model": settings.model,
        "settings": dataclasses.asdict(settings),
        "recipe": dataclasses.asdict(recipe),
        "data": {
            "source": dataset.source, "train_images": len(train_split), "test_images": len(test_split),
            "holdout": {"images": len(holdout), "seed": HOLDOUT_SEED, "sha256": holdout.fingerprint()} if holdout else None,
        },
        "teacher": teacher_info,
        "init_from": init_from,
        "versions": library_versions(),
        "command": settings.command(dataset.source, skip_bad_images=bool(dataset.skipped)),
    }
    files = _write_outputs(out, final, history, metrics, config, dataset.class_names)
    # Only now is the run complete; until here a kill leaves a checkpoint to resume.
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return TrainResult(out, files, metrics, history)


def _fit(settings: TrainSettings, recipe: Recipe, train_split: Split, test_split: Split, out: Path, state: dict | None,
         started: float, verbose, data_source: str, teacher: TeacherCache | None, initial: list | None, init_from: dict | None,
         policy: str):
    """Build (or restore) and fit the model (a new one from `initial` weights when given) under the dtype
    `policy`; return it, the epoch history, earlier seconds and the precision history."""
    spec = get_spec(settings.model)
    checkpoint = out / CHECKPOINT_DIR
    batches = TrainingBatches(
        train_split.images, train_split.labels, settings.batch_size, flip=recipe.flip, shift_pixels=recipe.shift_pixels,
        seed=settings.seed, first_epoch=state["epoch"] if state else 0, alternating_flip=recipe.alternating_flip,
        drop_last=recipe.drop_last, teacher=teacher.train if teacher else None, grid=teacher.grid if teacher else None,
        zoom_out=settings.zoom_out or 0.0,
    )
    test_targets = one_hot(test_split.labels)
    if teacher:
        test_targets = packed_targets(test_targets, teacher.test)
    total_steps = settings.epochs * len(batches)
    lookahead = Lookahead(recipe.lookahead_every, recipe.lookahead_decay, total_steps) if recipe.lookahead_every else None
    with distribution_scope(settings.distribute):
        if state is not None:
            files = checkpoint_files(out, state)
            try:
                model = keras.models.load_model(files / "model.keras")
            except Exception as error:  # Keras raises many types for a damaged file
                raise TrainError(f"{files / 'model.keras'}: unreadable checkpoint ({type(error).__name__}); "
                                 f"remove {checkpoint} to start over") from None
            first_epoch, history, earlier_seconds = state["epoch"], state["history"], state["wall_seconds"]
            if lookahead:
                lookahead.load(files)
            log.info("resuming %s at epoch %d of %d", out, first_epoch + 1, settings.epochs)
            # Runs checkpointed before precision_history was recorded: the policy their layers were saved with.
            saved = next(layer.dtype_policy.name for layer in model.layers if layer.weights)
            precision_history = state.get("precision_history") or [{"from_epoch": 1, "policy": saved}]
            if saved != policy:
                # The checkpoint's layers keep the policy they were saved with. The weights and the optimizer's
                # state are float32 under every policy, so only the compute changes; layers given a dtype of
                # their own (the float32 softmax) keep it.
                for layer in [model, *model.layers]:
                    if layer.dtype_policy.name == saved:
                        layer.dtype_policy = policy
                log.info("from epoch %d the run computes in %s (%s before)", first_epoch + 1, policy, saved)
                precision_history = [*precision_history, {"from_epoch": first_epoch + 1, "policy": policy}]
        else:
            model = create_model(settings.model)
            if initial is not None:
                model.set_weights(initial)
            elif spec.prepare:  # data-dependent initialisation; a model to start from has its own
                spec.prepare(model, train_split.images)
            _compile(model, recipe, steps_per_epoch=len(batches), frozen=spec.frozen, distill=settings if teacher else None)
            first_epoch, history, earlier_seconds = 0, [], 0.0
            precision_history = [{"from_epoch": 1, "policy": policy}]
        recorder = _RunRecorder(checkpoint, settings, history, started, earlier_seconds, data_source, init_from,
                                extras=[lookahead] if lookahead else [], precision_history=precision_history)
        # Lookahead first: the recorder's checkpoint and test figures see the weights it sets.
        callbacks: list = ([lookahead] if lookahead else []) + [recorder]
        # Keras writes TensorBoard logs through tf.summary, whatever the backend.
        if all(importlib.util.find_spec(name) for name in ("tensorflow", "tensorboard")):
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out / "logs")))
        else:
            log.warning("TensorBoard logs need tensorflow and tensorboard installed; %s/logs was not written", out)
        callbacks.append(SubsetLogNames())  # last: Keras' progress bar then prints test_accuracy, as it is
        if first_epoch < settings.epochs:
            model.fit(
                batches,
                validation_data=(test_split.images, test_targets),
                validation_batch_size=max(256, settings.batch_size),
                epochs=settings.epochs,
                initial_epoch=first_epoch,
                callbacks=callbacks,
                verbose=verbose,
            )
        elif recipe.weight_averaging:
            # Killed after the last checkpoint: fit() would have swapped the averaged
            # weights in at its end, so do that here.
            model.optimizer.finalize_variable_values(model.trainable_weights)
    return model, recorder.history, earlier_seconds, precision_history


def read_initial_weights(path: str, model) -> tuple[list, dict]:
    """The weights of the .keras model at `path`, checked to fit `model`, and its record (path, sha256)."""
    try:
        record = {"path": path, "sha256": sha256_file(path)}
    except OSError as error:
        raise TrainError(f"--init-from {path}: {error.strerror or error}") from None
    try:
        source = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for a file that is not a model
        raise TrainError(f"--init-from {path}: not a readable Keras model ({type(error).__name__})") from None
    wanted = [tuple(weight.shape) for weight in model.weights]
    given = [tuple(weight.shape) for weight in source.weights]
    if wanted != given:
        raise TrainError(f"--init-from {path}: its weights do not fit {model.name} "
                         f"({len(given)} arrays, {source.count_params()} parameters; {model.name} has "
                         f"{len(wanted)} arrays, {model.count_params()} parameters)")
    return source.get_weights(), record


def _metrics(settings, dataset: Cifar10, train_split: Split, test_split: Split, probabilities, history, parameters) -> dict:
    predictions = np.argmax(probabilities, axis=1)
    confusion = confusion_matrix(test_split.labels, predictions)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "model": settings.model,
        "test_accuracy": float(np.mean(predictions == test_split.labels)),
        "test_images": len(test_split),
        "per_class_accuracy": {name: float(value) for name, value in zip(dataset.class_names, per_class, strict=True)},
        "confusion_matrix": confusion.tolist(),
        "epochs": settings.epochs,
        "train_images": len(train_split),
        "train_images_per_second": _images_per_second(history, len(train_split)),
        "seconds_to_test_accuracy": _seconds_to_marks(history),
        "parameters": int(parameters),
    }


def _write_outputs(out: Path, model, history: list[dict], metrics: dict, config: dict, class_names) -> dict[str, Path]:
    files = {name: out / name for name in (MODEL_FILE, "history.csv", "learning_curves.png", "confusion_matrix.png", "metrics.json", "config.json")}
    with atomic_path(files[MODEL_FILE]) as temporary:
        model.save(temporary)
    write_text(files["history.csv"], history_csv(history))
    plot_learning_curves(history, files["learning_curves.png"], title=f"{metrics['model']} on CIFAR-10")
    plot_confusion_matrix(
        np.array(metrics["confusion_matrix"]), class_names, files["confusion_matrix.png"],
        title=f"{metrics['model']}: test accuracy {metrics['test_accuracy']:.2%}",
    )
    write_json(files["metrics.json"], metrics)
    write_json(files["config.json"], config)
    if (out / "logs").is_dir():
        files["logs"] = out / "logs"
    return files


# --- pieces --------------------------------------------------------------------------


class _RunRecorder(keras.callbacks.Callback):
    """Times each epoch, keeps the history, and checkpoints after every epoch."""

    def __init__(self, checkpoint: Path, settings: TrainSettings, history: list[dict], started: float, earlier_seconds: float,
                 data_source: str, init_from: dict | None = None, extras=(), precision_history: list[dict] | None = None):
        super().__init__()
        self.precision_history = precision_history  # [{from_epoch, policy}, ...]: a --resume may change the compute
        self.checkpoint, self.settings, self.history, self.data_source = checkpoint, settings, list(history), data_source
        self.init_from = init_from  # the record of the file a fine-tune started from, kept for --resume
        self.extras = list(extras)  # objects with save(folder), checkpointed with the model
        self.started, self.earlier_seconds = started, earlier_seconds
        self._epoch_start = 0.0
        self._train_seconds: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._train_seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        # Validation runs at the end of each epoch; the time before it is training time.
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train_seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._epoch_start
        self.history.append({
            "epoch": epoch + 1,
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": float(logs.get("accuracy", float("nan"))),
            "test_loss": float(logs.get("val_loss", float("nan"))),
            "test_accuracy": float(logs.get("val_accuracy", float("nan"))),
            "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "train_seconds": round(train_seconds, 3),
            "wall_seconds": round(self.earlier_seconds + time.perf_counter() - self.started, 2),
        })
        # The epoch's files go to a folder of their own; state.json, replaced last and atomically,
        # is the commit point. A kill anywhere before it leaves the previous epoch's state and
        # files together, so no epoch is trained twice on weights that already include it.
        folder = f"epoch-{epoch + 1:04d}"
        files = self.checkpoint / folder
        shutil.rmtree(files, ignore_errors=True)  # left by a kill before its state.json: never named by it
        files.mkdir(parents=True)
        with atomic_path(files / "model.keras") as temporary:
            self.model.save(temporary)
        for extra in self.extras:
            extra.save(files)
        write_json(self.checkpoint / "state.json", {
            "epoch": epoch + 1,
            "folder": folder,
            "settings": dataclasses.asdict(self.settings),
            "history": self.history,
            "wall_seconds": self.earlier_seconds + time.perf_counter() - self.started,
            "data_source": self.data_source,
            "init_from": self.init_from,
            "precision_history": self.precision_history,
        })
        # Only now are the older files unneeded: earlier epochs' folders, and the files of a
        # checkpoint written before per-epoch folders (model.keras and extras beside state.json).
        for entry in self.checkpoint.iterdir():
            if entry.name in ("state.json", folder):
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@contextmanager
def _removed_if_left_empty(folder: Path, created: bool):
    """A run folder this run created goes again when bad input (a teacher or --init-from file) stops it before anything is written."""
    try:
        yield
    except CifarEdgeError:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def check_against_data(settings: TrainSettings, dataset: Cifar10) -> None:
    """A one-line error for a holdout that leaves no training image. (The limits are "at most":
    a limit past the data uses all of it, and metrics.json records the counts used.)"""
    if settings.holdout and settings.holdout >= len(dataset.train):
        raise TrainError(f"--holdout {settings.holdout}: the data has only {len(dataset.train)} training images")


def _limit(split: Split, limit: int | None, seed: int) -> Split:
    return split.balanced_subset(limit, seed) if limit else split


def _compile(model, recipe: Recipe, steps_per_epoch: int, frozen: tuple[str, ...] = (), distill: TrainSettings | None = None) -> None:
    total_steps = recipe.epochs * steps_per_epoch
    if recipe.schedule == "linear":
        learning_rate = LinearWarmupDecay(recipe.learning_rate, total_steps, int(total_steps * recipe.warmup_fraction),
                                          recipe.lr_start_factor, recipe.lr_end_factor)
    elif recipe.schedule == "constant":
        learning_rate = recipe.learning_rate
    elif recipe.schedule == "cosine":
        # A warm-up longer than a quarter of the run would leave no time to decay.
        warmup = min(int(recipe.warmup_epochs * steps_per_epoch), total_steps // 4)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else recipe.learning_rate,
            decay_steps=max(1, total_steps - warmup),
            warmup_target=recipe.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}")
    grouped = frozen or recipe.bias_lr_multiplier != 1 or recipe.whiten_bias_epochs
    if grouped:
        frozen_from = {f"^{re.escape(path)}$": 0 for path in frozen}
        if recipe.whiten_bias_epochs:
            frozen_from["^whiten/bias$"] = round(recipe.whiten_bias_epochs * steps_per_epoch)
        optimizer = GroupSGD(
            learning_rate, momentum=recipe.momentum, nesterov=recipe.nesterov, decoupled_decay=recipe.weight_decay,
            lr_multipliers={"(^|/)beta$": recipe.bias_lr_multiplier} if recipe.bias_lr_multiplier != 1 else {},
            frozen_from=frozen_from, use_ema=recipe.weight_averaging, ema_momentum=EMA_MOMENTUM,
        )
    else:
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=recipe.momentum, nesterov=recipe.nesterov, weight_decay=recipe.weight_decay or None,
            use_ema=recipe.weight_averaging, ema_momentum=EMA_MOMENTUM,
        )
    if distill:
        # Targets are packed (labels, teacher log-probabilities): see cifar_edge.train.distill.
        loss = DistillationLoss(distill.distill_alpha, distill.distill_temperature, recipe.label_smoothing)
        accuracy = keras.metrics.MeanMetricWrapper(label_accuracy, name="accuracy")
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    model.compile(optimizer=optimizer, loss=loss, metrics=[accuracy])


def _seconds_to_marks(history: list[dict]) -> dict[str, float | None]:
    """Wall seconds from the run's start to the end of the first epoch whose test accuracy
    (single view, on the run's test images) reached each mark; None if none did."""
    marks = {}
    for mark in ACCURACY_MARKS:
        reached = [row["wall_seconds"] for row in history if row.get("wall_seconds") is not None and row["test_accuracy"] >= mark]
        marks[f"{mark:.0%}"] = reached[0] if reached else None
    return marks


def _images_per_second(history: list[dict], train_images: int) -> float | None:
    seconds = [row["train_seconds"] for row in history]
    # The first epoch also compiles the step function; leave it out when there are others.
    steady = seconds[1:] if len(seconds) > 1 else seconds
    return round(train_images / float(np.median(steady)), 1) if steady else None
