"""Training throughput per model: `python -m cifar_edge.train.throughput`.

Trains each model for a few short epochs at one batch size and reports the median
images/s of the epochs after the first (the first also compiles), training time only:
the per-epoch test pass is not counted.
"""

from __future__ import annotations

import itertools
import sys
import tempfile

from cifar_edge.runtime.data import ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, positive_int, run_cli
from cifar_edge.train.models import get_spec
from cifar_edge.train.settings import PRECISIONS, TrainSettings

PROG = "python -m cifar_edge.train.throughput"


def measure(models: list[str], dataset, *, batch_size: int, epochs: int, images: int,
            precisions: tuple[str, ...] = ("auto",)) -> list[dict]:
    """One row per model and precision: parameters, median training images/s and epoch seconds.

    Each model runs under each precision before the next model, so the rows that are
    compared sit side by side in time on a noisy machine.
    """
    from cifar_edge.train.trainer import train

    rows = []
    with tempfile.TemporaryDirectory(prefix="cifar-throughput-") as scratch:
        for name, precision in itertools.product(models, precisions):
            settings = TrainSettings.for_model(name, epochs=epochs, batch_size=batch_size, limit_train=images, limit_test=500,
                                               mixed_precision=precision)
            result = train(settings, dataset, f"{scratch}/{name}-{precision}", verbose=0)
            seconds = [row["train_seconds"] for row in result.history]
            rows.append({
                "model": name,
                "precision": result.metrics["precision_policy"],
                "parameters": result.metrics["parameters"],
                "images_per_second": result.metrics["train_images_per_second"],
                "epoch_seconds": [round(s, 2) for s in seconds],
                # The trainer's images/s already is the steady-epoch median, so derive from it.
                "median_epoch_seconds": round(images / result.metrics["train_images_per_second"], 2),
                "device": result.metrics["device"],
            })
    return rows


def markdown(rows: list[dict], batch_size: int, images: int) -> str:
    lines = [
        f"| model | precision | params | train images/s (batch {batch_size}) | median epoch s ({images} images) | epoch seconds |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(f"| `{row['model']}` | {row['precision']} | {row['parameters']:,} | {row['images_per_second']:.0f} | "
                     f"{row['median_epoch_seconds']:.2f} | {', '.join(map(str, row['epoch_seconds']))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description="Measure training throughput (images/s) per model on this machine.")
    parser.add_argument("--models", nargs="+", default=["vgg3-plus", "resnet8", "fast"], help="registry names")
    parser.add_argument("--data", help=f"CIFAR-10 source (default: ${ENV_VAR}, else download)")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per model; the first is left out")
    parser.add_argument("--images", type=positive_int, default=5000, help="training images per epoch")
    parser.add_argument("--mixed-precision", nargs="+", choices=PRECISIONS, default=["auto"],
                        help="one or more cifar-train --mixed-precision values; each model runs under each in turn")
    args = parser.parse_args(argv)

    def run() -> int:
        for name in args.models:
            get_spec(name)
        dataset = load_cifar10(resolve_source(args.data))
        rows = measure(args.models, dataset, batch_size=args.batch_size, epochs=args.epochs, images=args.images,
                       precisions=tuple(args.mixed_precision))
        device = rows[0]["device"]
        print(f"device: {device['cpu']} ({device['cpu_count']} CPUs), accelerators: {device['accelerators'] or 'none'}, backend {device['backend']}")
        print(markdown(rows, args.batch_size, args.images))
        return 0

    return run_cli(PROG, run)


if __name__ == "__main__":
    sys.exit(main())
