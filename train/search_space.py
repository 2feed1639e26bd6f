"""What `cifar-tune` may search and how: plain settings, checked before Keras loads."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cifar_edge.runtime.errors import CifarEdgeError

#: The tuner's folder inside --out: Keras-Tuner's state and one record per trial.
TUNER_DIR = "tuner"

TUNERS = ("random", "hyperband", "bayesian")
#: 32 pixels halve to 1 after five 2x2 poolings.
MAX_BLOCKS = 5
FILTER_STEP = 32
UNIT_STEP = 64
#: ResNet widths move in steps of 4: 16 (MLPerf Tiny's ResNet-8) and 20 (`resnet8-w20`) are both on the grid.
WIDTH_STEP = 4
#: Residual blocks per stage: 1 is ResNet-8, 2 ResNet-14, 3 ResNet-20.
MAX_DEPTH = 3


class TuneError(CifarEdgeError):
    """Bad search settings, a search space with nothing in it, or a budget nothing can meet."""


@dataclass(frozen=True)
class SearchSpace:
    """What the tuner may choose among VGG networks (`--family vgg`, the default). Ranges are inclusive."""

    family: ClassVar[str] = "vgg"

    blocks: tuple[int, int] = (2, 5)
    """VGG blocks (two 3x3 convolutions, then 2x2 max pooling); at most 5 on 32x32 images."""
    filters: tuple[int, int] = (32, 256)
    """Filters of each block's convolutions, in steps of 32, chosen per block."""
    dense_layers: tuple[int, int] = (0, 2)
    """Hidden dense layers between the last block and the classifier."""
    dense_units: tuple[int, int] = (64, 512)
    """Units of each hidden dense layer, in steps of 64."""
    dropout: tuple[float, float] = (0.0, 0.5)
    """Dropout after every block and hidden dense layer (one rate for the model)."""
    batch_norm: tuple[bool, ...] = (False, True)
    """Batch norm after every convolution and hidden dense layer: off, on, or either."""
    learning_rates: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    """SGD learning rates (momentum 0.9) to choose from."""

    def check(self) -> None:
        """One-line errors for a space that is empty or contradicts itself."""
        check_types(self, {"blocks": int, "filters": int, "dense_layers": int, "dense_units": int, "dropout": float})
        for name in ("blocks", "filters", "dense_layers", "dense_units", "dropout"):
            low, high = getattr(self, name)
            if low > high:
                raise TuneError(f"search space: --{name.replace('_', '-')} {low:g}-{high:g} is empty (minimum above maximum)")
        if self.blocks[0] < 1 or self.blocks[1] > MAX_BLOCKS:
            raise TuneError(f"search space: --blocks must lie in 1-{MAX_BLOCKS} (32-pixel images halve to 1 pixel after {MAX_BLOCKS})")
        if self.filters[0] < 1 or steps(self.filters, FILTER_STEP) == []:
            raise TuneError(f"search space: --filters {self.filters[0]}-{self.filters[1]} holds no multiple of {FILTER_STEP}")
        if self.dense_layers[0] < 0:
            raise TuneError("search space: --dense-layers cannot be negative")
        if self.dense_layers[1] > 0 and steps(self.dense_units, UNIT_STEP) == []:
            raise TuneError(f"search space: --dense-units {self.dense_units[0]}-{self.dense_units[1]} holds no multiple of {UNIT_STEP}")
        if not 0 <= self.dropout[0] <= self.dropout[1] < 1:
            raise TuneError("search space: --dropout must lie in 0-0.95")
        if not self.batch_norm or not all(isinstance(v, bool) for v in self.batch_norm):
            raise TuneError("search space: batch norm must allow on, off or both")
        if not _positive_numbers(self.learning_rates):
            raise TuneError("search space: --learning-rates needs at least one positive rate")

    def smallest(self) -> dict:
        """The cheapest candidate in the space: if it misses a budget, every candidate does."""
        values = {"blocks": self.blocks[0], "dense_layers": self.dense_layers[0], "dropout": self.dropout[0],
                  "batch_norm": min(self.batch_norm), "learning_rate": self.learning_rates[0]}
        values.update({f"filters_{i}": steps(self.filters, FILTER_STEP)[0] for i in range(self.blocks[0])})
        values.update({f"units_{i}": steps(self.dense_units, UNIT_STEP)[0] for i in range(self.dense_layers[0])})
        return values


@dataclass(frozen=True)
class ResNetSpace:
    """What the tuner may choose among ResNet v1 networks of the edge model's family (`--family resnet`).

    A candidate is MLPerf Tiny's ResNet-8 layout (a 3x3 stem, three stages at strides 1, 2, 2,
    average pooling, the classifier) with its width, depth and convolution type chosen.
    """

    family: ClassVar[str] = "resnet"
    widths: tuple[int, int] = (16, 24)
    """Filters of the stem and the first stage, in steps of 4; the second and third stages double them."""
    depth: tuple[int, int] = (1, 1)
    """Residual blocks per stage: 1 is ResNet-8, 2 ResNet-14, 3 ResNet-20."""
    separable: tuple[bool, ...] = (False, True)
    """Residual 3x3 convolutions plain, depthwise-separable (3x3 depthwise, BN, 1x1), or either."""
    learning_rates: tuple[float, ...] = (0.01, 0.03, 0.1)
    """SGD learning rates (momentum 0.9) to choose from; `resnet8`'s own recipe peaks at 0.1."""

    def check(self) -> None:
        """One-line errors for a space that is empty or contradicts itself."""
        check_types(self, {"widths": int, "depth": int})
        for name in ("widths", "depth"):
            low, high = getattr(self, name)
            if low > high:
                raise TuneError(f"search space: --{name} {low}-{high} is empty (minimum above maximum)")
        if self.widths[0] < 1 or steps(self.widths, WIDTH_STEP) == []:
            raise TuneError(f"search space: --widths {self.widths[0]}-{self.widths[1]} holds no multiple of {WIDTH_STEP}")
        if self.depth[0] < 1 or self.depth[1] > MAX_DEPTH:
            raise TuneError(f"search space: --depth must lie in 1-{MAX_DEPTH} (residual blocks per stage)")
        if not self.separable or not all(isinstance(v, bool) for v in self.separable):
            raise TuneError("search space: separable convolutions must allow on, off or both")
        if not _positive_numbers(self.learning_rates):
            raise TuneError("search space: --learning-rates needs at least one positive rate")

    def smallest(self) -> dict:
        """The cheapest candidate in the space: if it misses a budget, every candidate does."""
        # Separable blocks have fewer MACs and parameters but more operators, so neither is the
        # cheaper at batch 1 everywhere (BENCHMARKS.md, "Edge candidates"): the plain one is checked.
        return {"family": self.family, "width": steps(self.widths, WIDTH_STEP)[0], "depth": self.depth[0],
                "separable": min(self.separable), "learning_rate": self.learning_rates[0]}


#: Every search family by its `--family` name.
SPACES = {space.family: space for space in (SearchSpace, ResNetSpace)}


def check_types(space, ranges: dict[str, type]) -> None:
    """Each range a pair of numbers of its kind, as a hand-edited search.json may not have them."""
    for name, kind in ranges.items():
        value = getattr(space, name)
        numbers = (int,) if kind is int else (int, float)
        if len(value) != 2 or not all(isinstance(v, numbers) and not isinstance(v, bool) for v in value):
            raise TuneError(f"search space: --{name.replace('_', '-')} must be a range of two {'whole ' if kind is int else ''}numbers, "
                            f"found {list(value)}")


def _positive_numbers(values) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)


def steps(bounds: tuple[int, int], step: int) -> list[int]:
    return [value for value in range(step, bounds[1] + 1, step) if value >= bounds[0]]


@dataclass(frozen=True)
class TuneSettings:
    """One search. Everything here must match for `--resume` to continue it."""

    tuner: str = "random"
    """`random`, `hyperband` or `bayesian`."""
    max_trials: int = 10
    """Trials to run (Hyperband stops after this many too)."""
    epochs: int = 3
    """Epochs per trial (Hyperband's maximum)."""
    limit_train: int | None = None
    """Training images to search on (class-balanced), validation carved from them; None for all 50,000."""
    validation_fraction: float = 0.1
    """Share of those images held out as the validation split that ranks the trials."""
    seed: int = 0
    latency_budget_ms: float | None = None
    """Reject candidates whose int8 TFLite p50 latency at batch 1 on this device exceeds this."""
    max_params: int | None = None
    """Reject candidates with more parameters than this."""
    threads: int | None = None
    """LiteRT threads when timing candidates (None: its default, as `cifar-run`)."""
    space: SearchSpace | ResNetSpace = field(default_factory=SearchSpace)

    def check(self) -> None:
        required, optional = ("max_trials", "epochs", "seed"), ("limit_train", "max_params", "threads")
        for name in required + optional:
            value, floor = getattr(self, name), 0 if name == "seed" else 1
            if (value is not None or name in required) and (not isinstance(value, int) or isinstance(value, bool) or value < floor):
                raise TuneError(f"--{name.replace('_', '-')} must be a whole number of at least {floor}, found {value!r}")
        budget = self.latency_budget_ms
        if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0):
            raise TuneError(f"--latency-budget-ms must be a positive number, found {budget!r}")
        if self.tuner not in TUNERS:
            raise TuneError(f"unknown tuner {self.tuner!r}; choose one of {', '.join(TUNERS)}")
        if not isinstance(self.validation_fraction, (int, float)) or not 0 < self.validation_fraction < 1:
            raise TuneError("the validation fraction must lie between 0 and 1")
        self.space.check()

    def as_dict(self) -> dict:
        data = json.loads(json.dumps(dataclasses.asdict(self)))  # tuples become lists, as they come back from search.json
        data["space"]["family"] = self.space.family
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TuneSettings:
        fields = dict(data["space"])
        family = fields.pop("family", SearchSpace.family)  # searches saved before --family were all VGG
        if family not in SPACES:
            raise TuneError(f"unknown search family {family!r}; choose one of {', '.join(SPACES)}")
        space = SPACES[family](**{k: tuple(v) for k, v in fields.items()})
        return cls(**{**data, "space": space})


def read_search_settings(out: str | os.PathLike) -> TuneSettings:
    """The settings of the search in `out`, for --resume."""
    saved = Path(out) / "search.json"
    if not saved.is_file():
        raise TuneError(f"--resume: {out} holds no search to continue (no search.json)")
    try:
        return TuneSettings.from_dict(json.loads(saved.read_text())["settings"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TuneError(f"{saved}: unreadable search settings ({error})") from None
