"""Weight interpolation between a run and its fine-tune (WiSE-FT, Wortsman et al. 2022).

A fine-tune that starts from a run (`cifar-train --init-from`) stays in the run's basin, so the
straight line between the two weight sets is a family of working models: `alpha` 0 is the run,
1 the fine-tune. On the zoom-out fine-tune of the 400-epoch `edge` run, alpha 0.9 kept most of the
fine-tune's scene gain and won back part of the raw accuracy it cost (held-out figures in
BENCHMARKS.md, "Release: the interpolated `edge`"; `tools/soup_sweep.py` prints them).

Every weight is interpolated, BatchNorm's moving statistics included: the two runs share their
first 400 epochs, and the held-out accuracy shows the averaged statistics fit the averaged weights.

    python -m cifar_edge.train.soup BASE.keras TUNED.keras --alpha 0.9 --out DIR

DIR gets `model.keras` and `config.json`: the fine-tune's run record (so `cifar-export` finds the
held-out images) with an `interpolation` entry naming both files, their sha256 and alpha.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cifar_edge.runtime.errors import run_cli
from cifar_edge.runtime.files import atomic_path, check_writable_dir, sha256_file, writable_dir, write_json
from cifar_edge.train.settings import TrainError

PROG = "python -m cifar_edge.train.soup"


def interpolate(base, tuned, alpha: float):
    """`tuned` with every weight set to (1 - alpha) * base + alpha * tuned; `tuned` itself is changed and returned."""
    if isinstance(alpha, bool) or not 0 <= alpha <= 1:
        raise TrainError(f"alpha must be between 0 and 1, not {alpha!r}")
    shapes = [tuple(w.shape) for w in base.weights], [tuple(w.shape) for w in tuned.weights]
    if shapes[0] != shapes[1]:
        raise TrainError(f"the two models differ in shape ({len(shapes[0])} and {len(shapes[1])} weight arrays, "
                         f"{base.count_params()} and {tuned.count_params()} parameters)")
    tuned.set_weights([(1 - alpha) * b + alpha * t for b, t in zip(base.get_weights(), tuned.get_weights(), strict=True)])
    return tuned


def _load(path: str):
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        raise TrainError(f"{path}: not a readable Keras model ({error})") from None


def _holdout(path: str) -> dict | None:
    """The held-out record of the run beside `path` (config.json's data.holdout), None without one."""
    config = Path(path).parent / "config.json"
    if not config.is_file():
        return None
    try:
        return (json.loads(config.read_text()).get("data") or {}).get("holdout")
    except (OSError, ValueError, AttributeError) as error:
        raise TrainError(f"{config}: unreadable run record ({error})") from None


def write_soup(base: str, tuned: str, alpha: float, out: str) -> Path:
    """Write the interpolated model and its run record into `out`; return the model's path."""
    if _holdout(base) != _holdout(tuned):
        # Otherwise the "held-out" images of one could be training images of the other.
        raise TrainError(f"{base} and {tuned} were trained with different held-out images (their config.json data.holdout)")
    check_writable_dir(out)
    model = interpolate(_load(base), _load(tuned), alpha)
    out_dir = writable_dir(out)
    config_path = Path(tuned).parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config["interpolation"] = {"base": {"path": base, "sha256": sha256_file(base)},
                               "tuned": {"path": tuned, "sha256": sha256_file(tuned)}, "alpha": alpha}
    target = out_dir / "model.keras"
    with atomic_path(target) as temporary:
        model.save(temporary)
    write_json(out_dir / "config.json", config)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the run's .keras model (alpha 0)")
    parser.add_argument("tuned", help="its fine-tune's .keras model (alpha 1), trained with --init-from BASE")
    parser.add_argument("--alpha", type=float, required=True, help="the fine-tune's share, from 0 to 1")
    parser.add_argument("--out", required=True, help="folder for model.keras and config.json")
    args = parser.parse_args(argv)

    def body() -> int:
        for path in (args.base, args.tuned):
            if not Path(path).is_file():
                raise TrainError(f"{path}: no such model file")
        print(write_soup(args.base, args.tuned, args.alpha, args.out))
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
