"""`cifar-bench`: accuracy against latency for every format, and reports merged across devices."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cifar_edge.benchmarks.bench import (
    BENCH_ENGINES,
    BenchOptions,
    count_steps,
    find_candidates,
    markdown_table,
    read_results,
    run_benchmark,
    write_outputs,
)
from cifar_edge.benchmarks.outputs import subset_sizes
from cifar_edge.runtime.data import load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, non_negative_int, positive_float, positive_int, run_cli
from cifar_edge.runtime.files import check_writable_dir, writable_dir
from cifar_edge.runtime.integrity import SKIP_FLAG, verify_model_file


def batch_sizes(text: str) -> tuple[int, ...]:
    """`1,32` -> (1, 32): positive whole numbers, comma-separated."""
    try:
        sizes = tuple(positive_int(part.strip()) for part in text.split(","))
    except argparse.ArgumentTypeError:
        sizes = ()
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, got {text!r}")
    return tuple(sorted(set(sizes)))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="cifar-bench",
        usage="%(prog)s [options] MODEL_OR_DIR [MODEL_OR_DIR ...] --out OUT\n       %(prog)s report DIR [DIR ...] --out OUT",
        description="Measure accuracy, latency, throughput, size and memory of model files on this machine.",
        epilog="cifar-bench report DIR ... --out DIR merges results from several runs or devices. "
        "Exit 1 if any row failed, 2 for bad input.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL_OR_DIR", help=".tflite/.onnx/.keras files, or export folders with manifest.json")
    parser.add_argument("--out", metavar="DIR", required=True, type=Path, help="folder for results.json, .csv, .md and the plot")
    parser.add_argument("--data", metavar="PATH", help="CIFAR-10 source (default: $CIFAR10_DATA, else download)")
    parser.add_argument("--limit", metavar="N", type=positive_int, help="test images, class-balanced (default: all 10,000)")
    parser.add_argument("--threads", metavar="N", type=positive_int, help="engine threads (default: each engine's choice)")
    parser.add_argument("--batch-sizes", metavar="B[,B...]", type=batch_sizes, default=(1, 32), help="throughput batch sizes (default: 1,32)")
    parser.add_argument("--min-time", metavar="S", type=positive_float, default=2.0, help="seconds of timed runs per batch size (default: 2)")
    parser.add_argument("--warmup", metavar="N", type=non_negative_int, default=10, help="untimed runs before timing (default: 10)")
    parser.add_argument("--device-name", metavar="NAME", help="this machine's label in merged reports (default: host name)")
    parser.add_argument("--engines", nargs="+", choices=BENCH_ENGINES, default=list(BENCH_ENGINES), help="engines to measure (default: all)")
    parser.add_argument("--slice-time", metavar="S", type=positive_float, default=0.25,
                        help="timing is cut into slices this long, cycled over all rows, against machine drift (default: 0.25)")
    parser.add_argument(SKIP_FLAG, action="store_true",
                        help="measure model files even though they differ from the sha256 in the manifest beside them")
    parser.add_argument("--seed", metavar="S", type=non_negative_int, default=0, help="test subset seed; 0 matches cifar-export validation (default: 0)")
    return parser


def build_report_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cifar-bench report", description="Merge cifar-bench results into one table and plot, grouped by device.")
    parser.add_argument("results", nargs="+", metavar="DIR", help="cifar-bench output folders (or results.json files)")
    parser.add_argument("--out", metavar="DIR", required=True, type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return run_cli("cifar-bench report", lambda: _report(argv[1:]))
    return run_cli("cifar-bench", lambda: _bench(argv))


def _bench(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    options = BenchOptions(limit=args.limit, threads=args.threads, batch_sizes=args.batch_sizes, min_time=args.min_time,
                           warmup=args.warmup, engines=tuple(args.engines), device_name=args.device_name, seed=args.seed,
                           slice_time=args.slice_time)
    check_writable_dir(args.out)
    candidates = find_candidates(args.models, options.engines)
    if not args.skip_integrity_check:
        for candidate in candidates:
            verify_model_file(candidate.path)  # before the data loads: a damaged file is a one-line error
    source = resolve_source(args.data)
    dataset = load_cifar10(source)
    split = dataset.test.balanced_subset(options.limit, options.seed) if options.limit else dataset.test
    out = writable_dir(args.out)
    progress = _Progress(count_steps(candidates, options))
    try:
        results = run_benchmark(candidates, split, options, dataset.source, on_step=progress, command=shlex.join(["cifar-bench", *argv]))
    finally:
        progress.close()
    paths = write_outputs([results], out)
    print(markdown_table([results]), end="")
    for path in paths:
        print(f"wrote {path}")
    if not any(path.suffix == ".png" for path in paths):
        print("cifar-bench: plot skipped: matplotlib is not installed (pip install matplotlib, or run `cifar-bench report` elsewhere)",
              file=sys.stderr)
    return 1 if any(row["status"] != "ok" for row in results["rows"]) else 0


class _Progress:
    """A tqdm bar over the benchmark's steps when tqdm is installed, else a line per loaded row on stderr."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True) if tqdm else None

    def __call__(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description(label, refresh=False)
            self.bar.update(1)
        elif label.endswith(" loaded"):
            print(f"cifar-bench: {label}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(argv: list[str]) -> int:
    args = build_report_parser().parse_args(argv)
    check_writable_dir(args.out)
    runs = [run for given in args.results for run in read_results(given)]
    runs.sort(key=lambda run: run["device"]["name"])  # grouped by device, stable within one
    sizes = subset_sizes(runs)
    if len(sizes) > 1:
        print(f"cifar-bench report: warning: the runs measured different numbers of test images ({', '.join(map(str, sizes))}; "
              "different --limit): their accuracies are not on the same images", file=sys.stderr)
    out = writable_dir(args.out)
    paths = write_outputs(runs, out)
    print(markdown_table(runs), end="")
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
