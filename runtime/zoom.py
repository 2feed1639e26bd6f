"""Zoom settings: which centred crops of a frame are classified, and how their answers become one.

`cifar-run --zoom`, `ClassifierOptions.zoom` and the `zoom` entry of a manifest
row all mean the same thing, and are checked here, once. A manifest row may carry the setting
its file answers with by default (`--zoom auto`), with the `unknown` threshold fitted for it:
the weighted mean of two views scores lower than either view alone, so the single-view
threshold would refuse more than it should (BENCHMARKS.md, "Zoom as a model's default").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Zoom:
    """A zoom setting, checked when it is built (ValueError)."""

    fractions: tuple[float, ...] = (1.0,)
    """Centred crops, as fractions (above 0, at most 1) of the frame's square side; (1.0,): the whole square once."""
    weights: tuple[float, ...] | None = None
    """None keeps the most confident view; else one positive weight per fraction, and the answer is the
    weighted mean of the views' calibrated probabilities."""
    min_score: float | None = None
    """The `unknown` threshold fitted for this setting on held-out images (manifest rows only); None: none fitted."""
    images: int | None = None
    """How many held-out images `min_score` was fitted on."""

    def __post_init__(self):
        fractions = self.fractions
        if not fractions or not all(_number(f) and 0 < f <= 1 for f in fractions):
            raise ValueError(f"zoom {fractions!r}: one or more fractions above 0 and at most 1")
        if self.weights is not None and (len(self.weights) != len(fractions) or not all(_number(w) and 0 < w < math.inf for w in self.weights)):
            raise ValueError(f"zoom weights {self.weights!r}: one positive weight per zoom fraction {fractions!r}")
        if self.min_score is not None and not (_number(self.min_score) and 0 <= self.min_score <= 1):
            raise ValueError(f"zoom min_score {self.min_score!r}: a number from 0 to 1")
        if self.images is not None and (isinstance(self.images, bool) or not isinstance(self.images, int) or self.images < 1):
            raise ValueError(f"zoom images {self.images!r}: a positive count")

    @property
    def text(self) -> str:
        """As `--zoom` spells it: `1,0.75` or `1:0.75,0.75:0.25`."""
        if self.weights is None:
            return ",".join(f"{f:g}" for f in self.fractions)
        return ",".join(f"{f:g}:{w:g}" for f, w in zip(self.fractions, self.weights, strict=True))

    def same_views(self, other: Zoom) -> bool:
        """Whether `other` classifies the same crops and combines them the same way (thresholds aside)."""
        return (self.fractions, self.weights) == (other.fractions, other.weights)

    @classmethod
    def parse(cls, text: str) -> Zoom:
        """`F[:W][,F[:W]...]`: comma-separated fractions, each with a `:W` weight or none with one."""
        try:
            parts = [tuple(float(x) for x in part.split(":")) for part in text.split(",")]
        except ValueError:
            parts = []
        weighted = {len(part) == 2 for part in parts}
        if not parts or any(len(part) not in (1, 2) for part in parts) or len(weighted) != 1:
            raise ValueError(f"expected fractions above 0 and at most 1, comma-separated, each with a :weight or none with one, got {text!r}")
        fractions = tuple(part[0] for part in parts)
        return cls(fractions, tuple(part[1] for part in parts) if weighted == {True} else None)

    def as_dict(self) -> dict:
        return {"fractions": list(self.fractions), "weights": None if self.weights is None else list(self.weights),
                "min_score": self.min_score, "images": self.images}

    @classmethod
    def from_dict(cls, data: object) -> Zoom:
        """A manifest row's `zoom` entry (ValueError when it is not shaped as `as_dict` writes one)."""
        if not isinstance(data, dict) or not isinstance(data.get("fractions"), list) or not isinstance(data.get("weights"), (list, type(None))):
            raise ValueError("zoom needs a list of fractions and a list of weights (or null)")
        weights = data["weights"]
        return cls(tuple(data["fractions"]), None if weights is None else tuple(weights), data.get("min_score"), data.get("images"))


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The whole square, once: what a file without a zoom entry answers with.
ONE_VIEW = Zoom()
