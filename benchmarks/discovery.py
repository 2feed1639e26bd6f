"""The files `cifar-bench` measures: model files as given, and export folders through their manifest."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cifar_edge.benchmarks.records import BENCH_ENGINES, BenchError, Candidate
from cifar_edge.runtime.classifier import resolve_model
from cifar_edge.runtime.files import is_temporary
from cifar_edge.runtime.formats import MODEL_SUFFIXES, REFERENCE_ENGINE, REFERENCE_SUFFIX, engine_for
from cifar_edge.runtime.manifest import MANIFEST, ManifestError, file_rows, read_manifest


def find_candidates(inputs: list[str], engines: tuple[str, ...] = BENCH_ENGINES) -> list[Candidate]:
    """Model files and export folders as rows to measure, in the order given."""
    candidates: list[Candidate] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_file():
            if path.suffix.lower() not in MODEL_SUFFIXES:
                raise BenchError(f"{given}: not a model file (expected {', '.join(MODEL_SUFFIXES)})")
            calibration = resolve_model(path).calibration
            candidates.append(Candidate(path, engine_for(path), path.suffix.lower().lstrip("."), reference=path.suffix == REFERENCE_SUFFIX,
                                        calibration=calibration.as_dict() if calibration else None))
        elif path.is_dir():
            found = _from_folder(path)
            if not found:
                raise BenchError(f"{given}: folder holds no manifest.json and no {', '.join(MODEL_SUFFIXES)} files")
            candidates.extend(found)
        else:
            raise BenchError(f"{given}: no such file or folder")
    chosen = [c for c in candidates if c.engine in engines]
    if not chosen:
        raise BenchError(f"no model files for engine {', '.join(engines)} in {', '.join(inputs)}")
    return chosen


def keras_installed() -> bool:
    """Whether the Keras reference row can run here; looked up without importing Keras or TensorFlow."""
    return importlib.util.find_spec("keras") is not None


def _from_folder(folder: Path) -> list[Candidate]:
    try:
        manifest = read_manifest(folder)
    except ManifestError as error:
        raise BenchError(str(error)) from None
    if manifest is None:
        return [Candidate(p, engine_for(p), p.suffix.lstrip("."), reference=p.suffix == REFERENCE_SUFFIX)
                for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not is_temporary(p)]
    if "files" not in manifest:
        raise BenchError(f"{folder / MANIFEST}: not an export manifest (no \"files\")")
    rows = file_rows(manifest)
    candidates = []
    name = manifest.get("model") or ""
    # Files with test-time augmentation in the graph are their own rows ("fast+tta6"), so
    # a table of both exports shows what the views cost and buy. The .keras source sees
    # one view, so the manifest's (TTA) Keras accuracy is not its figure.
    with_tta = manifest.get("tta", "none") != "none"
    tagged = f"{name}+tta{manifest.get('tta_views')}" if with_tta else name
    # A packaged manifest's source is relative to its folder; an export's is absolute.
    source = folder / manifest["source"] if manifest.get("source") else None
    # The reference row only where Keras is installed: on a runtime-only install (a Pi) it could only fail.
    if source is not None and source.suffix == REFERENCE_SUFFIX and source.is_file() and keras_installed():
        candidates.append(Candidate(source, REFERENCE_ENGINE, REFERENCE_ENGINE, reference=True,
                                    export_accuracy=None if with_tta else manifest.get("keras_accuracy"),
                                    export_images=manifest.get("validation_images"), model=name))
    for row in rows:
        path = folder / row["file"]
        if path.is_file():
            candidates.append(Candidate(path, row.get("engine") or engine_for(path), row.get("format") or path.suffix.lstrip("."),
                                        export_accuracy=row.get("accuracy"),
                                        export_images=manifest.get("validation_images"), model=tagged,
                                        calibration=row.get("calibration")))
    return candidates
