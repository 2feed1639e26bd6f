"""A training run's settings and checkpoint state: plain Python, no Keras.

Kept apart from the trainer so the CLI can check its flags and the data before paying
for the TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.train.models import Recipe, get_spec

PRECISIONS = ("auto", "on", "off")
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
    limit_train: int | None = None
    limit_test: int | None = None
    seed: int = 0
    mixed_precision: str = "auto"
    distribute: str = "none"

    @classmethod
    def for_model(cls, model: str, **overrides) -> TrainSettings:
        """Settings for `model`, taking the recipe's value for every override left None."""
        recipe = get_spec(model).recipe
        defaults = {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "learning_rate": recipe.learning_rate}
        values = {**defaults, **{key: value for key, value in overrides.items() if value is not None}}
        return cls(model=model, **values)

    def recipe(self) -> Recipe:
        base = get_spec(self.model).recipe
        return dataclasses.replace(
            base, epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate
        )

    def command(self, data_source: str | None) -> str:
        """The `cifar-train` command line that repeats this run."""
        parts = [
            "cifar-train", f"--model {self.model}", f"--epochs {self.epochs}", f"--batch-size {self.batch_size}",
            f"--learning-rate {self.learning_rate:g}", f"--seed {self.seed}",
            f"--mixed-precision {self.mixed_precision}", f"--distribute {self.distribute}",
        ]
        if self.limit_train:
            parts.append(f"--limit-train {self.limit_train}")
        if self.limit_test:
            parts.append(f"--limit-test {self.limit_test}")
        if data_source:
            parts.append(f"--data {data_source}")
        return " ".join(parts) + " --out DIR"


def read_checkpoint_settings(out_dir: str | os.PathLike) -> TrainSettings:
    """The settings of the unfinished run in `out_dir`, for resuming it."""
    state = read_state(Path(out_dir))
    if state is None:
        raise TrainError(f"{out_dir}: nothing to resume (no {CHECKPOINT_DIR}/ from an unfinished run)")
    return TrainSettings(**state["settings"])


def read_state(out: Path) -> dict | None:
    path = out / CHECKPOINT_DIR / "state.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TrainError(f"{path}: unreadable checkpoint state ({error})") from None
