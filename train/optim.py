"""The speed-record recipe's optimizer pieces, in Keras: a linear warm-up/decay schedule,
SGD with per-variable learning-rate multipliers and freezes, and lookahead averaging.

The schedule and the optimizer are registered Keras objects, so a checkpoint's compiled
model restores them on `--resume`. The delivered `model.keras` is saved uncompiled and
needs none of this to load.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
from keras import ops

from cifar_edge.runtime.files import atomic_path

PACKAGE = "cifar_edge"


@keras.saving.register_keras_serializable(PACKAGE)
class LinearWarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from start_factor x peak to the peak over the warm-up, then linear to end_factor x peak.

    airbench94's `get_lr`: 0.2 -> 1 over the first 23% of the steps, then 1 -> 0.07.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int, start_factor: float, end_factor: float):
        self.peak, self.total_steps, self.warmup_steps = float(peak), int(total_steps), int(warmup_steps)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        decay = float(max(self.total_steps - self.warmup_steps, 1))
        rising = self.start_factor + (1.0 - self.start_factor) * step / warmup
        falling = 1.0 + (self.end_factor - 1.0) * ops.minimum((step - self.warmup_steps) / decay, 1.0)
        return self.peak * ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "start_factor": self.start_factor, "end_factor": self.end_factor}


@keras.saving.register_keras_serializable(PACKAGE)
class GroupSGD(keras.optimizers.SGD):
    """SGD (Nesterov optional) with decoupled weight decay, per-variable learning-rate
    multipliers, and variables frozen from a given step on.

    Variables are matched by regular expressions on their path (`layer/variable`).
    Freezing lives in the optimizer, not in `variable.trainable`: a variable-level
    `trainable=False` is not saved in a `.keras` file, so a resumed run would silently
    train it again, and a freeze in mid-run would change the trainable set, which the
    compiled step and the optimizer's slots are built for. A frozen variable keeps its
    value, its momentum and its decay still; its gradient is computed and dropped, which
    for the small whitening kernel is well under 1% of a step.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, *, decoupled_decay: float = 0.0,
                 lr_multipliers: dict[str, float] | None = None, frozen_from: dict[str, int] | None = None, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.decoupled_decay = float(decoupled_decay)
        self.lr_multipliers = dict(lr_multipliers or {})
        self.frozen_from = {pattern: int(step) for pattern, step in (frozen_from or {}).items()}

    def build(self, variables):
        super().build(variables)
        # Matched once on the Keras variables: the TensorFlow backend hands update_step
        # its tf.Variables, which have no Keras path.
        self._multipliers = [_first_match(self.lr_multipliers, v.path) or 1.0 for v in variables]
        self._freeze_steps = [_first_match(self.frozen_from, v.path) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        base_lr = ops.cast(learning_rate, dtype)
        lr = base_lr * ops.cast(self._multipliers[index], dtype)
        gradient = ops.cast(gradient, dtype)
        momentum = ops.cast(self.momentum, dtype)
        m = self.momentums[index] if self.momentum else None
        new_m = m * momentum - gradient * lr if m is not None else None
        if new_m is None:
            step = -gradient * lr
        elif self.nesterov:
            step = new_m * momentum - gradient * lr
        else:
            step = new_m
        if self.decoupled_decay:
            step = step - variable * base_lr * ops.cast(self.decoupled_decay, dtype)
        frozen_from = self._freeze_steps[index]
        if frozen_from is not None:
            live = ops.cast(ops.less(self.iterations, frozen_from), dtype)
            step = step * live
            if new_m is not None:
                new_m = new_m * live + m * (1 - live)
        if new_m is not None:
            self.assign(m, new_m)
        self.assign_add(variable, step)

    def get_config(self):
        return {**super().get_config(), "decoupled_decay": self.decoupled_decay, "lr_multipliers": self.lr_multipliers,
                "frozen_from": self.frozen_from}


def _first_match(table: dict, path: str):
    for pattern, value in table.items():
        if re.search(pattern, path):
            return value
    return None


class Lookahead(keras.callbacks.Callback):
    """airbench94's lookahead: every `every` steps, move an average of all the model's
    weights (BN statistics included) towards the live ones, then reset the live weights to
    the average. The decay rises as (t/T)^3, and at the last step the live weights become
    the average.

    Keras' `use_ema` averages trainable variables only, so its BN statistics belong to the
    live weights, not to the average; this averages every weight.
    """

    STATE_FILE = "lookahead.npz"

    def __init__(self, every: int, decay: float, total_steps: int):
        super().__init__()
        self.every, self.decay, self.total_steps = int(every), float(decay), int(total_steps)
        self.average: list[np.ndarray] | None = None
        self.step = 0
        self.updates = 0

    def on_train_begin(self, logs=None):
        self.step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.average is None:
            self.average = [np.array(ops.convert_to_numpy(w), np.float32) for w in self.model.weights]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            self.update(self.decay**self.every * (self.step / self.total_steps) ** 3)
        if self.step >= self.total_steps:
            self.update(1.0)

    def update(self, decay: float) -> None:
        """average <- decay average + (1 - decay) live; live <- average."""
        for average, weight in zip(self.average, self.model.weights, strict=True):
            average += (1 - decay) * (np.asarray(ops.convert_to_numpy(weight), np.float32) - average)
            weight.assign(average)
        self.updates += 1

    def save(self, folder: Path) -> None:
        with atomic_path(folder / self.STATE_FILE) as temporary:
            with open(temporary, "wb") as handle:
                np.savez(handle, *self.average)

    def load(self, folder: Path) -> None:
        with np.load(folder / self.STATE_FILE) as saved:
            self.average = [saved[f"arr_{i}"] for i in range(len(saved.files))]
