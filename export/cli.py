"""`cifar-export MODEL.keras --out DIR`: quantized TFLite and ONNX files, each validated."""

from __future__ import annotations

import os
import sys

from cifar_edge.export.options import CALIBRATION_METHODS
from cifar_edge.runtime.data import ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, non_negative_float, positive_int, run_cli
from cifar_edge.runtime.files import check_writable_dir
from cifar_edge.runtime.formats import FORMATS, OPTIONS, formats_of_option, select_formats
from cifar_edge.runtime.tta import TTA_MODES

PROG = "cifar-export"


def build_parser() -> ArgumentParser:
    table = "; ".join(f"{f.name} ({f.description}, {'always' if f.option == 'default' else '--' + f.option})" for f in FORMATS)
    parser = ArgumentParser(
        prog=PROG,
        description="Export a cifar-edge .keras model to TFLite and ONNX, validate every file against Keras, and write manifest.json.",
        epilog=f"Formats: {table}. Data for calibration and validation: --data PATH, else ${ENV_VAR}, else the official download.",
    )
    parser.add_argument("model", help="the .keras file (from cifar-train)")
    parser.add_argument("--out", metavar="DIR", required=True, help="folder for the exported files and manifest.json")
    for option in OPTIONS:  # --int8, --fp16, --dynamic: one flag per option of the format table
        added = formats_of_option(option)
        calibrated = ", calibrated" if all(f.calibrated for f in added) else ""
        parser.add_argument(f"--{option}", action="store_true",
                            help=f"add {' and '.join(f.name for f in added)} ({added[0].description}{calibrated})")
    parser.add_argument("--all", action="store_true", help="write every format")
    parser.add_argument("--data", metavar="PATH", help=f"CIFAR-10 source (default: ${ENV_VAR}, else download)")
    parser.add_argument("--calibration-images", metavar="N", type=positive_int, default=500, help="training images for int8 calibration (default: 500)")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="auto",
                        help="ONNX int8 calibration; auto tries each and keeps the most accurate (default: auto)")
    parser.add_argument("--tta", choices=tuple(TTA_MODES), default="none",
                        help="test-time augmentation built into every exported graph: none, flip (2 views) or 6 views; "
                        "each view costs one more network pass (default: none)")
    parser.add_argument("--validate-images", metavar="N", type=positive_int, default=2000, help="test images each file is checked on (default: 2000)")
    parser.add_argument("--max-accuracy-drop", metavar="PP", type=non_negative_float, default=1.0,
                        help="percentage points a file may lose against Keras (default: 1.0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


def _run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cifar_edge.export.exporter import export_model, find_holdout, load_keras_model
    from cifar_edge.export.options import ExportOptions

    formats = select_formats([option for option in OPTIONS if getattr(args, option)], every=args.all)
    check_writable_dir(args.out)
    model = load_keras_model(args.model)  # a bad model file fails before the data loads
    dataset = load_cifar10(resolve_source(args.data))
    holdout = find_holdout(args.model, dataset)
    if holdout is None:
        print(f"{PROG}: notice: no held-out training images recorded beside {args.model} (train with --holdout N): "
              "the files carry no calibration", file=sys.stderr)
    options = ExportOptions(
        calibration_images=args.calibration_images, calibration_method=args.calibration_method,
        validate_images=args.validate_images, max_accuracy_drop=args.max_accuracy_drop, tta=args.tta,
    )
    from tqdm import tqdm

    with tqdm(total=len(formats), desc="export + validate", unit="format", file=sys.stderr, disable=None) as bar:
        def finished(result) -> None:
            bar.set_postfix_str(f"{result.format}: {result.status}")
            bar.update(1)

        manifest = export_model(args.model, args.out, formats, dataset, options, on_format_done=finished, model=model,
                                holdout=holdout)
    print(summary_table(manifest))
    print(f"manifest: {os.path.join(args.out, 'manifest.json')}")
    failed = [f["format"] for f in manifest["files"] if f["status"] != "passed"]
    if failed:
        print(f"{PROG}: {len(failed)} format(s) did not pass: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def summary_table(manifest: dict) -> str:
    keras_accuracy = manifest["keras_accuracy"]
    lines = [
        f"{manifest['model']}: Keras accuracy {keras_accuracy:.2%} on {manifest['validation_images']} test images"
        + (f", TTA {manifest['tta']} ({manifest['tta_views']} views in every file)" if manifest.get("tta", "none") != "none" else "")
        + (f"; calibrated on {manifest['holdout_images']} held-out training images" if manifest.get("holdout_images") else ""),
        f"{'format':<15} {'status':<18} {'size KB':>9} {'accuracy':>9} {'Δ pp':>6} {'agree':>7} {'max |Δp|':>9} {'export s':>9}"
        f" {'ECE':>6} {'ECE cal':>7} {'T':>5} {'min score':>9}",
    ]
    for row in manifest["files"]:
        if row["status"] == "export failed":
            lines.append(f"{row['format']:<15} {row['status']:<18} {row['error']}")
            continue
        drop = (row["accuracy"] - row["keras_accuracy"]) * 100
        lines.append(
            f"{row['format']:<15} {row['status']:<18} {row['size_bytes'] / 1024:>9.1f} {row['accuracy']:>9.2%} {drop:>+6.2f} "
            f"{row['agreement']:>7.2%} {row['max_probability_difference']:>9.4f} {row['export_seconds']:>9.2f}"
            + _calibration_columns(row)
        )
    return "\n".join(lines)


def _calibration_columns(row: dict) -> str:
    def number(value, spec: str, width: int) -> str:
        return f"{value:>{width}{spec}}" if value is not None else f"{'-':>{width}}"

    calibration = row.get("calibration") or {}
    return (f" {number(row.get('ece'), '.2%', 6)} {number(row.get('ece_calibrated'), '.2%', 7)}"
            f" {number(calibration.get('temperature'), '.2f', 5)} {number(calibration.get('min_score'), '.3f', 9)}")


if __name__ == "__main__":
    sys.exit(main())
