"""Model integrity: a file that has a manifest beside it must still be the file the manifest describes.

`cifar-export` and the packaged models record every file's sha256 in `manifest.json`. A model
with a few bytes changed (a failing SD card, a bad copy, an interrupted re-export) often still
loads and classifies, giving wrong answers with no warning; so `Classifier`, `cifar-run` and
`cifar-bench` hash the file once per load and refuse a mismatch. The cost is a few
milliseconds for our largest file (BENCHMARKS.md, "Model integrity check"). A file without a
manifest, or whose manifest has no digest for it, is used as it is: there is nothing to check.
"""

from __future__ import annotations

import os
from pathlib import Path

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.files import sha256_file
from cifar_edge.runtime.manifest import MANIFEST, ManifestError, file_rows, read_manifest

#: The flag (and, as `check_integrity=False`, the argument) for a user who changed a file on purpose.
SKIP_FLAG = "--skip-integrity-check"


class IntegrityError(CifarEdgeError):
    """A model file whose bytes differ from those its manifest recorded."""


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 the manifest beside `path` records for it, or None when there is none to check."""
    path = Path(path)
    try:
        rows = file_rows(read_manifest(path.parent))
    except ManifestError as error:
        raise IntegrityError(f"{error}; cannot check {path.name} against it") from None
    digests = [row.get("sha256") for row in rows if row["file"] == path.name]
    return digests[0] if digests else None


def verify_model_file(path: str | os.PathLike, expected: str | None | object = ...) -> str | None:
    """Hash `path` and compare with its manifest; return the digest, None if unrecorded, or raise IntegrityError.

    `expected` is the digest when the caller has already read the manifest row (`ResolvedModel.sha256`),
    so the manifest is not read a second time; by default it is looked up.
    """
    path = Path(path)
    if expected is ...:
        expected = recorded_sha256(path)
    if expected is None:
        return None
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual} does not match {expected} recorded in {path.parent / MANIFEST}: the file is "
            f"damaged or was changed; export or install it again, or pass {SKIP_FLAG} if you changed it on purpose"
        )
    return actual
