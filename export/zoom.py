"""Give the files of an export (or packaged) folder a default zoom setting, with its own threshold.

    python -m cifar_edge.export.zoom runtime/models/edge --zoom 1:0.75,0.75:0.25 --run runs/edge-w20-kd0-200-zoom30-ft10-lr01

Every file row of the folder's manifest gets a `zoom` entry, which `cifar-run --zoom auto` (the
default) answers with. A mean of two views scores lower than one view, so the single-view
`unknown` threshold would refuse more answers than it must; each row's threshold is refitted
under the setting, on the held-out training images of the run (`--run`, the folder of its
config.json), to the same accepted accuracy as the file's calibration. ONNX files carry the entry
in their metadata_props too, as they carry their calibration, so a lone `.onnx` answers the same
way. Choose the setting on held-out images first (`tools/zoom_weights.py`), never on the test
split. `--zoom 1` removes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cifar_edge.export.converters import update_onnx_metadata
from cifar_edge.export.exporter import find_holdout
from cifar_edge.runtime.calibration import threshold_for_accuracy
from cifar_edge.runtime.classifier import Classifier
from cifar_edge.runtime.data import Split, load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, run_cli
from cifar_edge.runtime.files import atomic_path, sha256_file, write_json
from cifar_edge.runtime.formats import FORMATS
from cifar_edge.runtime.manifest import MANIFEST, file_rows, read_manifest
from cifar_edge.runtime.zoom import ONE_VIEW, Zoom


def fit_zoom(path: Path, zoom: Zoom, holdout: Split | None) -> Zoom:
    """`zoom` with the threshold that makes the answers of the file at `path` under it as often right,
    on `holdout`, as its calibration promises; without calibration or held-out images, no threshold."""
    classifier = Classifier(path, zoom=zoom, min_score=0)
    if classifier.calibration is None or holdout is None:
        return Zoom(zoom.fractions, zoom.weights)
    threshold = threshold_for_accuracy(classifier.probabilities(holdout.images), holdout.labels, classifier.calibration.target_accuracy)
    # As in Calibration.fit: no threshold reaches the target, so refuse everything rather than promise it.
    return Zoom(zoom.fractions, zoom.weights, 1.0 if threshold is None else round(threshold, 6), len(holdout))


def set_zoom(folder: Path, zoom: Zoom, holdout: Split | None) -> dict[str, Zoom | None]:
    """Write `zoom` (fitted per file) into every file row of `folder`'s manifest; file -> what was written.
    `ONE_VIEW` removes the entry, as a file without one answers with it anyway."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise CifarEdgeError(f"{folder}: no {MANIFEST}; give an export or packaged model folder")
    rows = file_rows(manifest)
    if not rows:
        raise CifarEdgeError(f"{folder / MANIFEST}: lists no model file")
    written: dict[str, Zoom | None] = {}
    for row in rows:  # every file is fitted before the manifest is touched: a failure leaves it as it was
        written[row["file"]] = None if zoom.same_views(ONE_VIEW) else fit_zoom(folder / row["file"], zoom, holdout)
    embeds = {f.name for f in FORMATS if f.embeds_metadata}
    for row in rows:
        fitted = written[row["file"]]
        if fitted is None:
            row.pop("zoom", None)
        else:
            row["zoom"] = fitted.as_dict()
        if row.get("format") in embeds:
            path = folder / row["file"]
            with atomic_path(path) as temporary:
                update_onnx_metadata(path, temporary, {"zoom": None if fitted is None else json.dumps(fitted.as_dict())})
            # The file changed, so its recorded digest and size follow it (the integrity check reads them).
            row["sha256"], row["size_bytes"] = sha256_file(path), path.stat().st_size
    write_json(folder / MANIFEST, manifest)
    return written


def main(argv: list[str] | None = None) -> int:
    def body():
        parser = ArgumentParser(prog="python -m cifar_edge.export.zoom", description=__doc__.splitlines()[0])
        parser.add_argument("folder", type=Path, help="an export folder, or a packaged model's (runtime/models/NAME)")
        parser.add_argument("--zoom", type=_zoom, required=True, metavar="F[:W][,F[:W]...]", help="as cifar-run --zoom takes it; 1 removes it")
        parser.add_argument("--run", type=Path, metavar="DIR",
                            help="the training run whose config.json names its held-out images (default: the folder of the manifest's source)")
        parser.add_argument("--data", help="CIFAR-10 source (default: $CIFAR10_DATA, else the download)")
        args = parser.parse_args(argv)
        manifest = read_manifest(args.folder)
        if manifest is None:
            raise CifarEdgeError(f"{args.folder}: no {MANIFEST}; give an export or packaged model folder")
        source = args.run / "model.keras" if args.run else args.folder / (manifest.get("source") or "model.keras")
        holdout = None
        if not args.zoom.same_views(ONE_VIEW):
            holdout = find_holdout(source, load_cifar10(resolve_source(args.data)))
            if holdout is None:
                print(f"notice: no held-out images recorded in {source.parent / 'config.json'}: the single-view threshold stays in use",
                      file=sys.stderr)
        for name, fitted in set_zoom(args.folder, args.zoom, holdout).items():
            threshold = "" if fitted is None or fitted.min_score is None else f", min_score {fitted.min_score} on {fitted.images} held-out images"
            print(f"{name}: zoom {'removed' if fitted is None else fitted.text}{threshold}")

    return run_cli("zoom", body)


def _zoom(text: str) -> Zoom:
    try:
        return Zoom.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


if __name__ == "__main__":
    sys.exit(main())
