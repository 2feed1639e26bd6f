"""`cifar-tune`: Keras-Tuner architecture search, optionally for the most accurate model under a latency budget."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from cifar_edge.runtime.data import ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, non_negative_int, positive_float, positive_int, run_cli
from cifar_edge.runtime.files import check_writable_dir
from cifar_edge.train.search_space import (
    FILTER_STEP,
    MAX_DEPTH,
    SPACES,
    UNIT_STEP,
    WIDTH_STEP,
    ResNetSpace,
    SearchSpace,
    TuneSettings,
    read_search_settings,
)

PROG = "cifar-tune"
# Defaults live in TuneSettings and the spaces; the parser's are None so --resume can tell what was given.
SETTING_FLAGS = ("tuner", "max_trials", "epochs", "limit_train", "seed", "latency_budget_ms", "max_params", "threads")
#: Each family's search-space flags: the fields of its space.
FAMILY_FLAGS = {family: tuple(f.name for f in dataclasses.fields(space)) for family, space in SPACES.items()}
SPACE_FLAGS = tuple(dict.fromkeys(flag for flags in FAMILY_FLAGS.values() for flag in flags))
VGG, RESNET = SearchSpace.family, ResNetSpace.family


def int_range(text: str) -> tuple[int, int]:
    """`2-5` -> (2, 5); a single number is a range of one."""
    return _range(text, int, "whole numbers")


def float_range(text: str) -> tuple[float, float]:
    return _range(text, float, "numbers")


def _range(text: str, kind, wanted: str):
    low, _, high = text.partition("-")
    try:
        return kind(low), kind(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range of {wanted} like 2-5, got {text!r}") from None


def rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, like 0.001,0.01, got {text!r}") from None


ON_OFF = {"on": (True,), "off": (False,), "both": (False, True)}
#: The flags that take on|off|both.
SWITCHES = ("batch_norm", "separable")


def _default(family: str, name: str) -> str:
    """A space field's default as its flag would spell it."""
    value = next(f.default for f in dataclasses.fields(SPACES[family]) if f.name == name)
    if name in SWITCHES:
        return next(word for word, switch in ON_OFF.items() if switch == tuple(value))
    if name == "learning_rates":
        return ",".join(f"{rate:g}" for rate in value)
    return f"{value[0]:g}-{value[1]:g}"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Search CNN architectures with Keras-Tuner; with --latency-budget-ms, for the most accurate one that "
        "runs within the budget here as int8 TFLite.",
        epilog="Outputs in --out: best.keras, trials.csv, trials.md, trials.png, search.json, and tuner/ (state for --resume). "
        "Exit 1 when no trial met the limits, 2 for bad input, 130 when interrupted (continue with --resume).",
    )
    parser.add_argument("--out", metavar="DIR", required=True, type=Path, help="folder for the search and its outputs")
    parser.add_argument("--data", metavar="PATH", help=f"CIFAR-10 source (default: ${ENV_VAR}, else download)")
    parser.add_argument("--tuner", choices=("random", "hyperband", "bayesian"), help="search strategy (default: random)")
    parser.add_argument("--max-trials", metavar="N", type=positive_int, help="trials to run (default: 10)")
    parser.add_argument("--epochs", metavar="N", type=positive_int, help="epochs per trial; Hyperband's maximum (default: 3)")
    parser.add_argument("--limit-train", metavar="N", type=positive_int, help="training images to search on, class-balanced; 10%% of them "
                        "become the validation split (default: all 50,000)")
    parser.add_argument("--seed", metavar="S", type=non_negative_int, help="random seed (default: 0)")
    parser.add_argument("--latency-budget-ms", metavar="MS", type=positive_float, help="reject candidates slower than this as int8 TFLite at "
                        "batch 1 on this machine, before training them")
    parser.add_argument("--max-params", metavar="N", type=positive_int, help="reject candidates with more parameters, before training them")
    parser.add_argument("--threads", metavar="N", type=positive_int, help="LiteRT threads when timing candidates (default: LiteRT's)")
    parser.add_argument("--resume", action="store_true", help="continue the search in --out (only --max-trials may change)")
    parser.add_argument("--family", choices=tuple(SPACES), help="the networks to search: vgg (the Keras-Tuner tutorial's space, "
                        "plus dropout, batch norm and learning rate) or resnet (the edge model's: ResNet-8's layout with its width, "
                        f"blocks per stage and separable convolutions chosen) (default: {SearchSpace.family})")
    space = parser.add_argument_group("search space of --family vgg")
    space.add_argument("--blocks", metavar="MIN-MAX", type=int_range, help=f"VGG blocks, MIN-MAX (default: {_default(VGG, 'blocks')})")
    space.add_argument("--filters", metavar="MIN-MAX", type=int_range, help=f"filters per block, MIN-MAX in steps of {FILTER_STEP} (default: {_default(VGG, 'filters')})")
    space.add_argument("--dense-layers", metavar="MIN-MAX", type=int_range, help=f"hidden dense layers, MIN-MAX (default: {_default(VGG, 'dense_layers')})")
    space.add_argument("--dense-units", metavar="MIN-MAX", type=int_range, help=f"units per dense layer, MIN-MAX in steps of {UNIT_STEP} (default: {_default(VGG, 'dense_units')})")
    space.add_argument("--dropout", metavar="MIN-MAX", type=float_range, help=f"dropout rate, MIN-MAX in steps of 0.1 (default: {_default(VGG, 'dropout')})")
    space.add_argument("--batch-norm", choices=tuple(ON_OFF), help=f"batch norm (default: {_default(VGG, 'batch_norm')})")
    resnet = parser.add_argument_group("search space of --family resnet")
    resnet.add_argument("--widths", metavar="MIN-MAX", type=int_range, help=f"filters of the stem and first stage, MIN-MAX in steps of {WIDTH_STEP}; "
                        f"the second and third stages double them (default: {_default(RESNET, 'widths')})")
    resnet.add_argument("--depth", metavar="MIN-MAX", type=int_range, help=f"residual blocks per stage, MIN-MAX up to {MAX_DEPTH}: 1 is ResNet-8, "
                        f"2 ResNet-14, 3 ResNet-20 (default: {_default(RESNET, 'depth')})")
    resnet.add_argument("--separable", choices=tuple(ON_OFF), help=f"depthwise-separable residual convolutions (default: {_default(RESNET, 'separable')})")
    both = parser.add_argument_group("search space of either family")
    both.add_argument("--learning-rates", metavar="LR[,LR...]", type=rates, help="SGD learning rates to choose from (default: "
                      + ", ".join(f"{_default(family, 'learning_rates')} for {family}" for family in SPACES) + ")")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given(args) -> dict:
    given = {flag: getattr(args, flag) for flag in SETTING_FLAGS if getattr(args, flag) is not None}
    space = {flag: getattr(args, flag) for flag in SPACE_FLAGS if getattr(args, flag) is not None}
    space.update({flag: ON_OFF[space[flag]] for flag in SWITCHES if flag in space})
    return {**given, "space": space}


def _check_family(family: str, space: dict) -> None:
    """A space flag of the other family is a mistake, not something to ignore."""
    for flag in space:
        if flag not in FAMILY_FLAGS[family]:
            owner = next(name for name, flags in FAMILY_FLAGS.items() if flag in flags)
            raise CifarEdgeError(f"{_flag(flag)} belongs to --family {owner}; this search is --family {family}")


def _run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    given = _given(args)
    if args.resume:
        saved = read_search_settings(args.out)
        if args.family is not None and args.family != saved.space.family:
            raise CifarEdgeError(f"--family {args.family} differs from the search being resumed ({saved.space.family}); "
                                 "only --max-trials may change")
        _check_family(saved.space.family, given["space"])
        for flag, value in {**{k: v for k, v in given.items() if k != "space"}, **given["space"]}.items():
            before = getattr(saved.space, flag) if flag in SPACE_FLAGS else getattr(saved, flag)
            if flag != "max_trials" and value != before:
                raise CifarEdgeError(f"{_flag(flag)} {value} differs from the search being resumed ({before}); "
                                     "only --max-trials may change")
        settings = dataclasses.replace(saved, max_trials=given.get("max_trials", saved.max_trials))
    else:
        family = args.family or SearchSpace.family
        _check_family(family, given["space"])
        settings = TuneSettings(**{**{k: v for k, v in given.items() if k != "space"}, "space": SPACES[family](**given["space"])})
    settings.check()
    check_writable_dir(args.out)
    # Everything cheap is checked; only now load the data and pay for TensorFlow.
    dataset = load_cifar10(resolve_source(args.data))
    from cifar_edge.train.int8_timing import int8_latency
    from cifar_edge.train.tune import timing_images, tune

    latency_of = int8_latency(timing_images(dataset, settings), settings.threads) if settings.latency_budget_ms else None
    result = tune(settings, dataset, args.out, resume=args.resume, latency_of=latency_of, on_trial=_print_trial)
    print((result.out_dir / "trials.md").read_text(), end="")
    for name, path in result.files.items():
        print(f"  {name:<12} {path}")
    if result.best is None:
        print(f"{PROG}: no trial met the limits, so there is no best model; raise --latency-budget-ms or --max-params, "
              "or shrink the search space", file=sys.stderr)
        return 1
    print(f"next: cifar-export {result.files['best.keras']} --int8 --data ...")
    return 0


def _print_trial(record: dict) -> None:
    accuracy = "-" if record["val_accuracy"] is None else f"{100 * record['val_accuracy']:.2f}%"
    latency = "" if record["latency_ms"] is None else f", {record['latency_ms']:.3f} ms"
    print(f"{PROG}: trial {record['trial']}: {record['status']}, {record['params']:,} params{latency}, "
          f"val {accuracy}, {record['seconds']:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
