"""Compare registry models by what they cost on this device as int8 TFLite: size and batch-1 latency.

    python -m cifar_edge.train.candidates --models resnet8 resnet8-w20 resnet8-sep40 --data PATH

Weights do not change either figure, so the models are converted untrained (calibrated on
a few hundred training images). Latency is the p50 of `cifar-tune`'s int8 timing, measured
round-robin over the models for `--rounds` rounds so that machine drift hits them alike;
the table gives each model's median over the rounds and its ratio to the first model's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from cifar_edge.runtime.data import ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, positive_float, positive_int, run_cli

PROG = "python -m cifar_edge.train.candidates"


def compare(names: list[str], calibration, rounds: int, seconds: float, threads: int) -> list[dict]:
    """One row per model: parameters, int8 file size, median p50 latency (ms) and its ratio to the first model's."""
    from cifar_edge.export.exporter import convert
    from cifar_edge.runtime.formats import get_format
    from cifar_edge.train.int8_timing import int8_latency
    from cifar_edge.train.models import create_model

    models = {name: create_model(name) for name in names}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="cifar-candidates-") as scratch:
        for name, model in models.items():
            target = Path(scratch) / f"{name}.tflite"
            result = convert(model, get_format("tflite-int8"), target, calibration)
            if result.status != "passed":
                raise CifarEdgeError(f"{name}: could not convert to tflite-int8 ({result.error})")
            sizes[name] = target.stat().st_size
    measure = int8_latency(calibration, threads, seconds)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, model in models.items():
            latencies[name].append(measure(model))
    medians = {name: float(np.median(values)) for name, values in latencies.items()}
    return [
        {"model": name, "parameters": int(models[name].count_params()), "int8_kb": round(sizes[name] / 1000, 1),
         "p50_ms": round(medians[name], 4), "ratio": round(medians[name] / medians[names[0]], 2)}
        for name in names
    ]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME", help="registry names; ratios are to the first")
    parser.add_argument("--data", help=f"CIFAR-10 source for the calibration images (default: ${ENV_VAR})")
    parser.add_argument("--rounds", type=positive_int, default=4, help="timing rounds over all models (default: 4)")
    parser.add_argument("--seconds", type=positive_float, default=2.0, help="timing per model per round (default: 2)")
    parser.add_argument("--threads", type=positive_int, default=1, help="LiteRT threads (default: 1)")
    args = parser.parse_args(argv)

    def body() -> int:
        from cifar_edge.train.models import get_spec

        for name in args.models:
            get_spec(name)  # an unknown name is one line before anything is loaded
        calibration = load_cifar10(resolve_source(args.data)).train.balanced_subset(200, 0)
        rows = compare(args.models, calibration, args.rounds, args.seconds, args.threads)
        print("| model | parameters | int8 KB | p50 ms (batch 1) | × first |")
        print("|---|---:|---:|---:|---:|")
        for row in rows:
            print(f"| `{row['model']}` | {row['parameters']:,} | {row['int8_kb']} | {row['p50_ms']:.3f} | {row['ratio']:.2f} |")
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
