"""A training run's settings and checkpoint state: plain Python, no Keras.

Kept apart from the trainer so the CLI can check its flags and the data before paying
for the TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.tta import TTA_MODES
from cifar_edge.train.models import Recipe, get_spec

PRECISIONS = ("auto", "on", "off", "bfloat16")
DISTRIBUTIONS = ("none", "mirrored")
CHECKPOINT_DIR = "checkpoint"


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

    @classmethod
    def for_model(cls, model: str, **overrides) -> TrainSettings:
        """Settings for `model`, taking the recipe's value for every override left None."""
        recipe = get_spec(model).recipe
        defaults = {name: getattr(recipe, name) for name in RECIPE_OVERRIDES}
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
                parts.append(f"--{name.replace('_', '-')} {repr(value) if isinstance(value, float) else value}")
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
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or not isinstance(state.get("history"), list):
            problem = "it lacks the epoch or the history"
        elif not isinstance(state.get("settings"), dict) or set(state["settings"]) != fields:
            problem = "its settings do not match this version of cifar-train"
        elif not isinstance(state.get("wall_seconds"), (int, float)) or not (out / CHECKPOINT_DIR / "model.keras").is_file():
            problem = "the checkpoint model or its timing is missing"
    if problem:
        raise TrainError(f"{path}: unreadable checkpoint ({problem}); remove {path.parent} to start over")
    return state
