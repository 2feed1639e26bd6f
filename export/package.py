"""Copy chosen files of an export folder into the runtime's packaged models.

    python -m cifar_edge.export.package runs/edge/export --name edge --sources models

The packaged manifest keeps only the copied files' rows, and records the export folder it
came from (its `source` and `exported_to` are relative to the manifest's folder), so `cifar-run --model NAME --info` can say exactly what ships. With `--sources`,
the `.keras` model the export came from is copied there too (as NAME.keras), so the repo
holds what every packaged file was made from.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from cifar_edge.runtime.classifier import PACKAGED_DIR
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, run_cli
from cifar_edge.runtime.files import atomic_path, writable_dir, write_json
from cifar_edge.runtime.formats import FORMAT_NAMES
from cifar_edge.runtime.manifest import MANIFEST, read_manifest

PACKAGED_FORMATS = ("tflite-int8", "onnx-int8")


def package_export(export_dir: Path, name: str, formats=PACKAGED_FORMATS, destination: Path = PACKAGED_DIR,
                   sources: Path | None = None) -> Path:
    """Copy `formats` from `export_dir` to `destination/name`, and the `.keras` source to `sources`; return the folder."""
    export_dir = Path(export_dir)
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise CifarEdgeError(f"{export_dir}: no {MANIFEST}; give the --out folder of cifar-export")
    rows = {row["format"]: row for row in manifest.get("files", [])}
    missing = [f for f in formats if rows.get(f, {}).get("status") != "passed"]
    if missing:
        raise CifarEdgeError(f"{export_dir}: no passed export for {', '.join(missing)}")
    target = writable_dir(Path(destination) / name, "--name")
    for stale in target.iterdir():
        if stale.is_file():
            stale.unlink()
    for export_format in formats:
        with atomic_path(target / rows[export_format]["file"]) as temporary:
            shutil.copyfile(export_dir / rows[export_format]["file"], temporary)
    source = manifest.get("source") or ""
    if sources is not None:
        if not Path(source).is_file():
            raise CifarEdgeError(f"{export_dir}: its source model {source or '(none recorded)'} is not there to copy")
        copied = writable_dir(sources, "--sources") / f"{name}.keras"
        with atomic_path(copied) as temporary:
            shutil.copyfile(source, temporary)
        source = str(copied)
    # Paths relative to the manifest's own folder, wherever this ran from, so no machine's layout ships in the package.
    packaged = {**manifest, "packaged_name": name, "source": os.path.relpath(Path(source).resolve(), target.resolve()) if source else "",
                "exported_to": os.path.relpath(export_dir.resolve(), target.resolve())}
    packaged["files"] = [rows[f] for f in formats]
    write_json(target / MANIFEST, packaged)
    return target


def main(argv: list[str] | None = None) -> int:
    def body():
        parser = ArgumentParser(prog="python -m cifar_edge.export.package", description=__doc__.splitlines()[0])
        parser.add_argument("export_dir", type=Path)
        parser.add_argument("--name", required=True, help="the name cifar-run --model will know it by")
        parser.add_argument("--formats", nargs="+", choices=FORMAT_NAMES, default=list(PACKAGED_FORMATS))
        parser.add_argument("--sources", type=Path, help="also copy the .keras source model here, as NAME.keras")
        args = parser.parse_args(argv)
        print(package_export(args.export_dir, args.name, tuple(args.formats), sources=args.sources))

    return run_cli("package", body)


if __name__ == "__main__":
    sys.exit(main())
