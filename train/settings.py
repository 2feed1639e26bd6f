"""A training run's settings and checkpoint state: plain Python, no Keras.

Kept apart from the trainer so the CLI can check its flags and the data before paying
for the TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.tta import TTA_MODES
from cifar_edge.train.models import Recipe, get_spec

PRECISIONS = ("auto", "on", "off", "bfloat16")
DISTRIBUTIONS = ("none", "mirrored")
CHECKPOINT_DIR = "checkpoint"
# A distilling run's cached teacher outputs, in its run directory (cifar_edge.train.distill).
CACHE_FILE = "teacher_cache.npz"

# --holdout N leaves the same N training images out of every run (this seed), so that
# calibration at export and runs with different seeds see one held-out set.
HOLDOUT_SEED = 0

# Distillation defaults, used when --teacher is given. alpha = 0.1 on the labels is Hinton et
# al.'s and the common CIFAR choice. T = 1, not their usual 4: our teachers are trained with
# label smoothing (airbench94: 0.2), so their outputs are already soft (mean top probability
# 0.80 on the training images), and T = 4 flattens them to near-uniform (mean top 0.22). On
# resnet8, 15 epochs, one seed (BENCHMARKS.md): T = 4 gave 78.98%, T = 1 80.73%, no teacher
# 80.79%. The shift step picks the cached teacher views: every flip at shifts that are
# multiples of the step (step 4 with 4-pixel shifts: -4, 0, 4 on each axis, 18 views).
DISTILL_ALPHA = 0.1
DISTILL_TEMPERATURE = 1.0
DISTILL_SHIFT_STEP = 4
DISTILL_FIELDS = ("distill_alpha", "distill_temperature", "distill_shift_step")


class TrainError(CifarEdgeError):
    pass


@dataclass(frozen=True)
class TrainSettings:
    """One training run's choices; with the data, they determine the run."""

    model: str
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    tta: str
    limit_train: int | None = None
    limit_test: int | None = None
    seed: int = 0
    mixed_precision: str = "auto"
    distribute: str = "none"
    holdout: int | None = None
    teacher: str | None = None
    distill_alpha: float | None = None
    distill_temperature: float | None = None
    distill_shift_step: int | None = None
    zoom_out: float | None = None
    init_from: str | None = None

    def __post_init__(self):
        get_spec(self.model)
        if self.mixed_precision not in PRECISIONS:
            raise TrainError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, not {self.mixed_precision!r}")
        if self.distribute not in DISTRIBUTIONS:
            raise TrainError(f"distribute must be one of {', '.join(DISTRIBUTIONS)}, not {self.distribute!r}")
        if self.tta not in TTA_MODES:
            raise TrainError(f"tta must be one of {', '.join(TTA_MODES)}, not {self.tta!r}")
        if self.weight_decay < 0:
            raise TrainError(f"weight_decay must be 0 or more, not {self.weight_decay}")
        if self.holdout is not None and self.holdout < 10:
            raise TrainError(f"holdout must be at least 10 images (one per class), not {self.holdout}")
        if self.zoom_out is not None and not 0 <= self.zoom_out <= 1:
            raise TrainError(f"zoom_out must be between 0 and 1, not {self.zoom_out}")
        if self.init_from is not None and not self.init_from.endswith(".keras"):
            raise TrainError(f"init_from must be a .keras model, not {self.init_from}")
        given = [name for name in DISTILL_FIELDS if getattr(self, name) is not None]
        if self.teacher is None and given:
            raise TrainError(f"--{given[0].replace('_', '-')} needs --teacher")
        if self.teacher is not None:
            if None in (self.distill_alpha, self.distill_temperature, self.distill_shift_step):
                raise TrainError("a teacher needs distill_alpha, distill_temperature and distill_shift_step (TrainSettings.for_model fills them)")
            if not 0 <= self.distill_alpha <= 1:
                raise TrainError(f"distill_alpha must be between 0 and 1, not {self.distill_alpha}")
            if self.distill_temperature <= 0:
                raise TrainError(f"distill_temperature must be above 0, not {self.distill_temperature}")
            if self.distill_shift_step < 0:
                raise TrainError(f"distill_shift_step must be 0 or more, not {self.distill_shift_step}")

    @classmethod
    def for_model(cls, model: str, **overrides) -> TrainSettings:
        """Settings for `model`, taking the recipe's value for every override left None."""
        recipe = get_spec(model).recipe
        defaults = {name: getattr(recipe, name) for name in RECIPE_OVERRIDES}
        if overrides.get("teacher") is not None:
            defaults.update(distill_alpha=DISTILL_ALPHA, distill_temperature=DISTILL_TEMPERATURE, distill_shift_step=DISTILL_SHIFT_STEP)
        values = {**defaults, **{key: value for key, value in overrides.items() if value is not None}}
        return cls(model=model, **values)

    def recipe(self) -> Recipe:
        base = get_spec(self.model).recipe
        return dataclasses.replace(base, **{name: getattr(self, name) for name in RECIPE_OVERRIDES})

    def command(self, data_source: str | None, skip_bad_images: bool = False) -> str:
        """The `cifar-train` command line that repeats this run: one flag per set field."""
        parts = ["cifar-train"]
        for name in RUN_FLAGS:
            value = getattr(self, name)
            if value is not None:
                text = repr(value) if isinstance(value, float) else shlex.quote(value) if isinstance(value, str) else value
                parts.append(f"--{name.replace('_', '-')} {text}")
        if data_source:
            parts.append(f"--data {data_source}")
        if skip_bad_images:
            parts.append("--bad-images skip")
        return " ".join(parts) + " --out DIR"


# Every field is a cifar-train flag that defines the run; on --resume they come from the
# checkpoint and may only repeat it.
RUN_FLAGS = tuple(field.name for field in dataclasses.fields(TrainSettings))
# The fields that override the model's recipe, and default to it.
RECIPE_OVERRIDES = ("epochs", "batch_size", "learning_rate", "weight_decay", "tta")


#: The trained model a finished run leaves in its folder.
MODEL_FILE = "model.keras"


def check_not_finished(out: Path, overwrite: bool) -> None:
    """A finished run is hours of work: a new run does not replace it unless asked to."""
    if not overwrite and (out / MODEL_FILE).is_file():
        raise TrainError(f"{out} holds a finished run ({MODEL_FILE}); choose another --out, or add --overwrite to replace it")


def check_run_dir(out: Path, resume: bool) -> dict | None:
    """The checkpoint state in `out`, after checking it fits `resume`: a run is never
    resumed from nothing, and an unfinished one is never silently started over."""
    state = read_state(out)
    if resume and state is None:
        raise TrainError(f"{out}: nothing to resume (no {CHECKPOINT_DIR}/ from an unfinished run)")
    if not resume and state is not None:
        raise TrainError(
            f"{out} holds an unfinished run ({CHECKPOINT_DIR}/, epoch {state['epoch']}); "
            f"continue it with --resume, or remove {out / CHECKPOINT_DIR} to start over"
        )
    return state


def checkpoint_files(out: Path, state: dict) -> Path:
    """The folder holding the checkpoint model (and its extras) that `state` belongs to.

    Each epoch's model goes to a folder of its own, and state.json, written last, names it:
    a kill between the two leaves state.json pointing at the previous, complete epoch.
    Checkpoints written before that rule (no "folder") keep the model beside state.json.
    """
    return out / CHECKPOINT_DIR / state.get("folder", "")


def read_state(out: Path) -> dict | None:
    """The checkpoint state of an unfinished run in `out`, checked; None if there is none."""
    path = out / CHECKPOINT_DIR / "state.json"
    if not path.is_file():
        return None
    problem = None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        state, problem = None, str(error)
    if problem is None:
        fields = {f.name for f in dataclasses.fields(TrainSettings)}
        # Fields added since a checkpoint was written default to None (off), so it still resumes.
        optional = {f.name for f in dataclasses.fields(TrainSettings) if f.default is None}
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or not isinstance(state.get("history"), list):
            problem = "it lacks the epoch or the history"
        elif not isinstance(state.get("settings"), dict) or not set(state["settings"]) <= fields or fields - set(state["settings"]) - optional:
            problem = "its settings do not match this version of cifar-train"
        elif not isinstance(folder := state.get("folder", ""), str) or Path(folder).name != folder or folder in (".", ".."):
            problem = "its model folder is not a name"
        elif not isinstance(state.get("wall_seconds"), (int, float)) or not (checkpoint_files(out, state) / "model.keras").is_file():
            problem = "the checkpoint model or its timing is missing"
    if problem:
        raise TrainError(f"{path}: unreadable checkpoint ({problem}); remove {path.parent} to start over")
    return state
