"""`cifar-train`: train a registry model on CIFAR-10."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from cifar_edge.runtime.data import BAD_IMAGE_POLICIES, ENV_VAR, load_cifar10, resolve_source
from cifar_edge.runtime.errors import (
    ArgumentParser,
    CifarEdgeError,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
)
from cifar_edge.runtime.files import check_writable_dir
from cifar_edge.runtime.tta import TTA_MODES
from cifar_edge.train.settings import (
    CACHE_FILE,
    DISTILL_ALPHA,
    DISTILL_SHIFT_STEP,
    DISTILL_TEMPERATURE,
    MODEL_FILE,
    PRECISIONS,
    RUN_FLAGS,
    TrainSettings,
    check_not_finished,
    check_run_dir,
)

PROG = "cifar-train"


def _existing_file(text: str) -> str:
    """An existing file, as an absolute path: the run's config and --resume then name it exactly."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return str(path.resolve())


def _keras_file(text: str) -> str:
    if not text.endswith(".keras"):
        raise argparse.ArgumentTypeError(f"expected a .keras model, not {text}")
    return _existing_file(text)


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text}")
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        # --model and --out are required for a new run; --resume needs only --out, --list-models neither.
        usage="%(prog)s --model NAME --out DIR [options]\n       %(prog)s --resume --out DIR [options]\n       %(prog)s --list-models",
        description="Train a CIFAR-10 model from the registry and write model.keras, history, plots and metrics to --out.",
        epilog=f"Data: --data PATH, else ${ENV_VAR}, else the official download. Defaults for epochs, batch size "
        "and learning rate come from each model's recipe (see --list-models).",
    )
    parser.add_argument("--model", metavar="NAME", help="registry name (see --list-models); required for a new run")
    parser.add_argument("--epochs", type=positive_int, metavar="N", help="epochs to train (default: the model's recipe)")
    parser.add_argument("--out", metavar="DIR", help="run directory for every output; required, but for --dry-run and --list-models")
    parser.add_argument("--data", metavar="PATH", help=f"CIFAR-10 source: official tarball or folder, image-folder tree or its tar (default: ${ENV_VAR}, else download)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N", help="images per step (default: the model's recipe)")
    parser.add_argument("--learning-rate", type=positive_float, metavar="LR", help="peak learning rate (default: the model's recipe)")
    parser.add_argument("--weight-decay", type=non_negative_float, metavar="WD",
                        help="decoupled weight decay (Keras' convention: p <- p (1 - lr wd) per step) (default: the model's recipe)")
    parser.add_argument("--tta", choices=tuple(TTA_MODES),
                        help="test-time augmentation for the reported test_accuracy_tta: none, flip, or 6 views (default: the model's recipe)")
    parser.add_argument("--limit-train", type=positive_int, metavar="N", help="train on this many images, class-balanced")
    parser.add_argument("--holdout", type=positive_int, metavar="N",
                        help="leave N class-balanced training images out of training (the same N for every run), for "
                        "calibration at export; metrics.json reports the model's accuracy on them")
    parser.add_argument("--limit-test", type=positive_int, metavar="N", help="evaluate on this many test images, class-balanced")
    parser.add_argument("--seed", type=non_negative_int, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run in --out from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace the finished run in --out (by default a folder that "
                        f"holds a {MODEL_FILE} is refused)")
    parser.add_argument(
        "--mixed-precision", choices=PRECISIONS,
        help="on: float16 compute, for GPUs; bfloat16: for CPUs with AVX512-BF16 or AMX; auto = on with a GPU (default: auto); "
        "with --resume, the rest of the run computes in it",
    )
    parser.add_argument("--distribute", choices=("none", "mirrored"), help="mirrored: data-parallel over all local GPUs (default: none)")
    parser.add_argument("--teacher", type=_existing_file, metavar="PATH",
                        help="distil from this model: any file that keeps the contract (.keras, .tflite, .onnx); its outputs are "
                        f"cached in --out as {CACHE_FILE}")
    parser.add_argument("--distill-alpha", type=_unit_interval, metavar="A",
                        help=f"with --teacher: weight of the label loss; 1 - A goes to the teacher's (default: {DISTILL_ALPHA})")
    parser.add_argument("--distill-temperature", type=positive_float, metavar="T",
                        help=f"with --teacher: softmax temperature of teacher and student in the soft loss (default: {DISTILL_TEMPERATURE:g})")
    parser.add_argument("--distill-shift-step", type=non_negative_int, metavar="PX",
                        help="with --teacher: teacher outputs are cached for every flip at shifts that are multiples of PX "
                        f"(0: unshifted only); each image takes its nearest cached view (default: {DISTILL_SHIFT_STEP})")
    parser.add_argument("--zoom-out", type=_unit_interval, metavar="P",
                        help="shrink this share of training images to 50-100%% of their side, each on another training "
                        "image, so the model knows subjects that fill only part of a camera frame (default: off)")
    parser.add_argument("--init-from", type=_keras_file, metavar="PATH",
                        help="start from the weights of this .keras model (of the same --model, e.g. a finished run's "
                        "model.keras) instead of a fresh initialisation, to fine-tune it; the schedule and the "
                        "optimizer start anew")
    parser.add_argument("--bad-images", choices=BAD_IMAGE_POLICIES, default="error", help="unreadable images: stop with an error, or skip them (default: error)")
    parser.add_argument("--dry-run", action="store_true", help="load and check the data, build the model, print both summaries, train nothing")
    parser.add_argument("--list-models", action="store_true", help="list the registry and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(PROG, lambda: _run(args))


def _run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the output
    from cifar_edge.train.models import list_models

    if args.list_models:
        for spec in list_models():
            recipe = spec.recipe
            print(f"{spec.name:<13} {spec.description}")
            print(f"{'':<13} default: {recipe.epochs} epochs, batch {recipe.batch_size}, SGD lr {recipe.learning_rate:g} "
                  f"({recipe.schedule}), weight decay {recipe.weight_decay:g}, TTA {recipe.tta}")
        return 0

    data = resolve_source(args.data)
    if args.resume:
        if not args.out:
            raise CifarEdgeError("--resume needs --out, the run directory to continue")
        state = check_run_dir(check_writable_dir(args.out), resume=True)
        settings = _resume_settings(args, state)
        data = _resume_data(data, state)
    else:
        if not args.model:
            raise CifarEdgeError("--model is required (see --list-models)")
        if not args.out and not args.dry_run:
            raise CifarEdgeError("--out is required: the directory for the run's outputs")
        settings = TrainSettings.for_model(**{flag: getattr(args, flag) for flag in RUN_FLAGS})
        if not args.dry_run:
            check_run_dir(check_writable_dir(args.out), resume=False)
            check_not_finished(Path(args.out), args.overwrite)

    # Everything cheap is checked; only now load the data and pay for TensorFlow.
    dataset = load_cifar10(data, bad_images=args.bad_images)
    from cifar_edge.train.models import create_model

    if args.dry_run:
        from cifar_edge.train.trainer import check_against_data

        check_against_data(settings, dataset)
        print(dataset.summary())
        available = len(dataset.train) - (settings.holdout or 0)
        held = f", {settings.holdout} held out" if settings.holdout else ""
        print(f"training would use {min(settings.limit_train or available, available)} train{held} and "
              f"{min(settings.limit_test or len(dataset.test), len(dataset.test))} test images (class-balanced subsets when limited)")
        model = create_model(settings.model)
        if settings.init_from:
            from cifar_edge.train.trainer import read_initial_weights

            read_initial_weights(settings.init_from, model)
            print(f"would start from the weights of {settings.init_from} (they fit {settings.model})")
        model.summary(print_fn=lambda line, **_: print(line))
        print("recipe:")
        for name, value in dataclasses.asdict(settings.recipe()).items():
            print(f"  {name.replace('_', ' ')}: {value:g}" if isinstance(value, float) else f"  {name.replace('_', ' ')}: {value}")
        print("dry run: nothing trained, nothing written")
        return 0

    from cifar_edge.train.device import describe_device, device_notices
    from cifar_edge.train.trainer import train

    for notice in device_notices(settings.mixed_precision, settings.distribute, describe_device()):
        print(f"{PROG}: notice: {notice}", file=sys.stderr)
    # A live progress bar on a terminal, one line per epoch in logs.
    result = train(settings, dataset, args.out, resume=args.resume, verbose=1 if sys.stdout.isatty() else 2)
    metrics = result.metrics
    print(f"{settings.model}: test accuracy {metrics['test_accuracy']:.2%} on {metrics['test_images']} images "
          f"after {metrics['epochs']} epoch{'s' if metrics['epochs'] != 1 else ''}, {metrics['wall_time_seconds']:.0f} s, "
          f"{metrics['train_images_per_second']} train images/s ({metrics['device']['backend']})")
    if "test_accuracy_tta" in metrics:
        print(f"with test-time augmentation ({metrics['tta']}): {metrics['test_accuracy_tta']:.2%}")
    print(f"outputs in {result.out_dir}:")
    for name, path in result.files.items():
        print(f"  {name:<22} {path}")
    return 0


#: The flags --resume may change: how the rest of the run computes, not what it learns. A run
#: started in bfloat16 on a CPU that has it must go on when the next machine emulates it (4.4x
#: slower: BENCHMARKS.md, "bfloat16 on a CPU that emulates it"); the switch is recorded (`precision_history`).
RESUME_OVERRIDES = ("mixed_precision",)


def _resume_settings(args, state: dict):
    settings = TrainSettings(**state["settings"])
    for flag in RUN_FLAGS:
        given = getattr(args, flag)
        if given is None or given == getattr(settings, flag):
            continue
        if flag in RESUME_OVERRIDES:
            settings = dataclasses.replace(settings, **{flag: given})
            continue
        raise CifarEdgeError(
            f"--{flag.replace('_', '-')} {given} differs from the run being resumed "
            f"({getattr(settings, flag)}); --resume repeats the saved settings"
            f" (only {', '.join('--' + f.replace('_', '-') for f in RESUME_OVERRIDES)} may change)"
        )
    return settings


def _resume_data(data: str | None, state: dict) -> str | None:
    """The run's own data unless told otherwise; other data would silently change the run."""
    saved = state.get("data_source")
    if data is None or saved is None:
        return data or saved
    if Path(data).expanduser().resolve() != Path(saved):
        raise CifarEdgeError(f"--data {data} differs from the data of the run being resumed ({saved})")
    return data


if __name__ == "__main__":
    sys.exit(main())
