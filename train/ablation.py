"""The speed-record recipe's ablation: `python -m cifar_edge.train.ablation`.

Trains, one after another on the same data and test images, a shortened run of: the old
`fast` recipe, `airbench94`, and `airbench94` without each of whitening, lookahead and
the weight-decay conversion; then `airbench94` again with another seed, to show the
noise. TTA's share is read from the `airbench94` run itself (single view against 6 views),
since it changes no training. The table guards the recipe against regressions: a part
that stops helping shows here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
from collections.abc import Callable

from cifar_edge.runtime.data import ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, positive_int, run_cli
from cifar_edge.runtime.files import write_json
from cifar_edge.train.models import ModelSpec, get_spec, registered
from cifar_edge.train.settings import PRECISIONS, TrainSettings

PROG = "python -m cifar_edge.train.ablation"
BASE = "airbench94"
# The weight decay the old `fast` recipe copied from PyTorch recipes: Keras' decoupled
# decay at this value is what "without the decay conversion" means.
UNCONVERTED_DECAY = 5e-4


def _without(recipe_changes: dict | None = None, **spec_changes) -> Callable[[ModelSpec], ModelSpec]:
    def change(spec: ModelSpec) -> ModelSpec:
        recipe = dataclasses.replace(spec.recipe, **(recipe_changes or {}))
        return dataclasses.replace(spec, recipe=recipe, **spec_changes)

    return change


# Variant label -> (registry model it starts from, change to its spec or None, seed).
VARIANTS: dict[str, tuple[str, Callable[[ModelSpec], ModelSpec] | None, int]] = {
    "fast (old recipe)": ("fast", None, 0),
    BASE: (BASE, None, 0),
    # The whitening conv then starts from the default init and trains like any conv.
    "- whitening": (BASE, _without({"whiten_bias_epochs": 0}, prepare=None, frozen=()), 0),
    "- lookahead": (BASE, _without({"lookahead_every": 0}), 0),
    "- decay conversion": (BASE, _without({"weight_decay": UNCONVERTED_DECAY}), 0),
    f"{BASE}, seed 1": (BASE, None, 1),
}


def run_variant(label: str, dataset, *, epochs: int, limit_train: int | None, limit_test: int, precision: str, folder: str) -> dict:
    """Train one variant and return its row."""
    from cifar_edge.train.trainer import train

    model, change, seed = VARIANTS[label]
    spec = get_spec(model)
    if change is not None:
        spec = change(dataclasses.replace(spec, name=f"{model}-ablation"))
    with registered(spec) if change is not None else contextlib.nullcontext():
        settings = TrainSettings.for_model(spec.name, epochs=epochs, limit_train=limit_train, limit_test=limit_test, seed=seed,
                                           mixed_precision=precision)
        result = train(settings, dataset, folder, verbose=0)
    metrics = result.metrics
    return {
        "variant": label, "model": model, "seed": seed, "epochs": epochs,
        "test_accuracy": metrics["test_accuracy"], "tta": metrics.get("tta", "none"),
        "test_accuracy_tta": metrics.get("test_accuracy_tta"), "wall_seconds": metrics["wall_time_seconds"],
        "train_images": metrics["train_images"], "test_images": metrics["test_images"],
    }


def markdown(rows: list[dict]) -> str:
    base = next((row for row in rows if row["variant"] == BASE), None)
    lines = ["| variant | epochs | test accuracy | Δ pp vs airbench94 | wall s |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        delta = f"{(row['test_accuracy'] - base['test_accuracy']) * 100:+.2f}" if base else ""
        lines.append(f"| {row['variant']} | {row['epochs']} | {row['test_accuracy']:.2%} | {delta} | {row['wall_seconds']:.0f} |")
    if base and base["test_accuracy_tta"] is not None:
        gain = (base["test_accuracy_tta"] - base["test_accuracy"]) * 100
        lines.append(f"| {BASE} + TTA {base['tta']} (same run) | {base['epochs']} | {base['test_accuracy_tta']:.2%} | {gain:+.2f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description="Ablate the airbench94 recipe on a shortened run, one variant after another.")
    parser.add_argument("--data", help=f"CIFAR-10 source (default: ${ENV_VAR}, else download)")
    parser.add_argument("--epochs", type=positive_int, default=2, help="epochs for every variant (default: 2, a fifth of airbench94's)")
    parser.add_argument("--limit-train", type=positive_int, help="train on this many images, class-balanced (default: all)")
    parser.add_argument("--limit-test", type=positive_int, default=2000, help="test images, class-balanced (default: 2000)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS), metavar="VARIANT",
                        help=f"which to run (default: all: {'; '.join(VARIANTS)})")
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default="auto", help="as cifar-train's (default: auto)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    def run() -> int:
        dataset = load_cifar10(resolve_source(args.data))
        rows = []
        with tempfile.TemporaryDirectory(prefix="cifar-ablation-") as scratch:
            for index, label in enumerate(args.variants):
                rows.append(run_variant(label, dataset, epochs=args.epochs, limit_train=args.limit_train, limit_test=args.limit_test,
                                        precision=args.mixed_precision, folder=f"{scratch}/{index}"))
                print(f"{label}: {rows[-1]['test_accuracy']:.2%} in {rows[-1]['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
        if args.json:
            write_json(args.json, rows)
        print(markdown(rows))
        return 0

    return run_cli(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
