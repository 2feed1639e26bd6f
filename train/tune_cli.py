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
from cifar_edge.train.search_space import SearchSpace, TuneSettings, read_search_settings

PROG = "cifar-tune"
# Defaults live in TuneSettings and SearchSpace; the parser's are None so --resume can tell what was given.
SETTING_FLAGS = ("tuner", "max_trials", "epochs", "limit_train", "seed", "latency_budget_ms", "max_params", "threads")
SPACE_FLAGS = ("blocks", "filters", "dense_layers", "dense_units", "dropout", "batch_norm", "learning_rates")


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


BATCH_NORM = {"on": (True,), "off": (False,), "both": (False, True)}


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
    space = parser.add_argument_group("search space (default: the Keras-Tuner tutorial's, plus dropout, batch norm and learning rate)")
    space.add_argument("--blocks", metavar="MIN-MAX", type=int_range, help="VGG blocks, MIN-MAX (default: 2-5)")
    space.add_argument("--filters", metavar="MIN-MAX", type=int_range, help="filters per block, MIN-MAX in steps of 32 (default: 32-256)")
    space.add_argument("--dense-layers", metavar="MIN-MAX", type=int_range, help="hidden dense layers, MIN-MAX (default: 0-2)")
    space.add_argument("--dense-units", metavar="MIN-MAX", type=int_range, help="units per dense layer, MIN-MAX in steps of 64 (default: 64-512)")
    space.add_argument("--dropout", metavar="MIN-MAX", type=float_range, help="dropout rate, MIN-MAX in steps of 0.1 (default: 0-0.5)")
    space.add_argument("--batch-norm", choices=tuple(BATCH_NORM), help="batch norm (default: both)")
    space.add_argument("--learning-rates", metavar="LR[,LR...]", type=rates, help="SGD learning rates to choose from (default: 0.001,0.003,0.01,0.03)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


def _given(args) -> dict:
    given = {flag: getattr(args, flag) for flag in SETTING_FLAGS if getattr(args, flag) is not None}
    space = {flag: getattr(args, flag) for flag in SPACE_FLAGS if getattr(args, flag) is not None}
    if "batch_norm" in space:
        space["batch_norm"] = BATCH_NORM[space["batch_norm"]]
    return {**given, "space": space}


def _run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    given = _given(args)
    if args.resume:
        saved = read_search_settings(args.out)
        for flag, value in {**{k: v for k, v in given.items() if k != "space"}, **given["space"]}.items():
            before = getattr(saved.space, flag) if flag in SPACE_FLAGS else getattr(saved, flag)
            if flag != "max_trials" and value != before:
                raise CifarEdgeError(f"--{flag.replace('_', '-')} {value} differs from the search being resumed ({before}); "
                                     "only --max-trials may change")
        settings = dataclasses.replace(saved, max_trials=given.get("max_trials", saved.max_trials))
    else:
        settings = TuneSettings(**{**{k: v for k, v in given.items() if k != "space"}, "space": SearchSpace(**given["space"])})
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
