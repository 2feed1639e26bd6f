"""The model families `cifar-tune` searches: Keras-Tuner choices → plain values → a model and its table cells.

Each family reads its own search space (`search_space.SearchSpace` for VGG, `ResNetSpace`
for the edge model's ResNets) and builds its candidates with the model registry's builders,
so a tuned model is the same graph `cifar-train --model` would build and keeps the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cifar_edge.train.search_space import FILTER_STEP, UNIT_STEP, WIDTH_STEP, ResNetSpace, SearchSpace, steps


@dataclass(frozen=True)
class Family:
    name: str
    columns: tuple[str, ...]
    """The trial record's keys that describe the architecture, in table order."""
    headers: tuple[str, ...]
    """The same columns' headers in trials.md."""
    choose: Callable[[object, object], dict]
    """Register the choices with Keras-Tuner's `hp` for a space and return them as plain values."""
    build: Callable[[dict, str], object]
    """The Keras model for a set of values, named."""
    describe: Callable[[dict], dict]
    """The record's architecture columns for a set of values."""
    cells: Callable[[dict], list]
    """The trials.md cells of those columns, from a record."""


def _choice(hp, name: str, options) -> object:
    """A Keras-Tuner choice, or the one option itself when there is nothing to choose."""
    options = sorted(set(options))
    return hp.Choice(name, options) if len(options) > 1 else options[0]


# --- VGG: the Keras-Tuner tutorial's space ---------------------------------------------------


def _vgg_choose(hp, space: SearchSpace) -> dict:
    values = {"blocks": hp.Int("blocks", *space.blocks)}
    filters = steps(space.filters, FILTER_STEP)
    for i in range(values["blocks"]):
        values[f"filters_{i}"] = hp.Int(f"filters_{i}", filters[0], filters[-1], step=FILTER_STEP)
    values["dense_layers"] = hp.Int("dense_layers", *space.dense_layers)
    units = steps(space.dense_units, UNIT_STEP)
    for i in range(values["dense_layers"]):
        values[f"units_{i}"] = hp.Int(f"units_{i}", units[0], units[-1], step=UNIT_STEP)
    values["dropout"] = hp.Float("dropout", *space.dropout, step=0.1) if space.dropout[1] > space.dropout[0] else space.dropout[0]
    values["batch_norm"] = _choice(hp, "batch_norm", space.batch_norm)
    values["learning_rate"] = hp.Choice("learning_rate", list(space.learning_rates))
    return values


def _vgg_build(values: dict, name: str):
    from cifar_edge.train.blocks import vgg

    dropout = values["dropout"]
    return vgg(name, tuple(values[f"filters_{block}"] for block in range(values["blocks"])),
               dense_units=tuple(values[f"units_{index}"] for index in range(values["dense_layers"])),
               block_dropouts=(dropout,) * values["blocks"], dense_dropouts=(dropout,) * values["dense_layers"],
               batch_norm=bool(values["batch_norm"]), bn_momentum=0.9)


def _vgg_describe(values: dict) -> dict:
    return {
        "blocks": values["blocks"],
        "filters": "/".join(str(values[f"filters_{i}"]) for i in range(values["blocks"])),
        "dense": "/".join(str(values[f"units_{i}"]) for i in range(values["dense_layers"])) or "-",
        "dropout": round(float(values["dropout"]), 2),
        "batch_norm": bool(values["batch_norm"]),
    }


VGG = Family(
    SearchSpace.family, ("blocks", "filters", "dense", "dropout", "batch_norm"), ("Blocks", "Filters", "Dense", "Dropout", "BN"),
    _vgg_choose, _vgg_build, _vgg_describe,
    lambda t: [t["blocks"], t["filters"], t["dense"], t["dropout"], "on" if t["batch_norm"] else "off"],
)


# --- ResNet: the edge model's family ---------------------------------------------------------


def _resnet_choose(hp, space: ResNetSpace) -> dict:
    widths = steps(space.widths, WIDTH_STEP)
    return {
        "family": ResNetSpace.family,
        "width": hp.Int("width", widths[0], widths[-1], step=WIDTH_STEP),
        "depth": hp.Int("depth", *space.depth),
        "separable": _choice(hp, "separable", space.separable),
        "learning_rate": hp.Choice("learning_rate", list(space.learning_rates)),
    }


def _resnet_build(values: dict, name: str):
    from cifar_edge.train.models import resnet

    width = values["width"]
    return resnet(name, (width, 2 * width, 4 * width), separable=bool(values["separable"]), depth=values["depth"])


def _resnet_describe(values: dict) -> dict:
    width = values["width"]
    return {"widths": f"{width}/{2 * width}/{4 * width}", "depth": values["depth"], "separable": bool(values["separable"])}


RESNET = Family(
    ResNetSpace.family, ("widths", "depth", "separable"), ("Widths", "Blocks per stage", "Separable"),
    _resnet_choose, _resnet_build, _resnet_describe,
    lambda t: [t["widths"], t["depth"], "yes" if t["separable"] else "no"],
)

FAMILIES = {family.name: family for family in (VGG, RESNET)}


def family_of(space: SearchSpace | ResNetSpace) -> Family:
    return FAMILIES[space.family]


def build_candidate(values: dict, name: str = "tuned"):
    """The model for one set of choices, keeping the model contract (values without a family are VGG's)."""
    return FAMILIES[values.get("family", VGG.name)].build(values, name)
