"""Reading an export's `manifest.json`: its shape checked once, for every reader.

`cifar-export` writes the manifest; the runtime, the integrity check and `cifar-bench` read
it, and a hand-edited or damaged one must fail as one line that names the file and the
field, never as a `TypeError` deep inside whichever reader met it first.
"""

from __future__ import annotations

import json
from pathlib import Path

from cifar_edge.runtime.errors import CifarEdgeError

MANIFEST = "manifest.json"
#: Per-file fields a reader may rely on being strings when present and not null. `file` must be
#: there, and is null only in the row of a format that failed to export (there is no file).
STRING_FIELDS = ("file", "format", "engine", "sha256")


def _json_type(value: object) -> str:
    """How JSON names a value's type, as the person editing the file sees it."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


class ManifestError(CifarEdgeError):
    """A manifest that is not JSON, or not shaped as `cifar-export` writes one."""


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest in `folder`, checked; None when the folder has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: unreadable manifest ({error})") from None
    check_manifest(data, path)
    return data


def check_manifest(data: object, where: str | Path) -> None:
    """Raise ManifestError unless `data` is a dict whose `files` (if any) is a list of file rows."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not an export manifest (a JSON object was expected, found {_json_type(data)})")
    rows = data.get("files", [])
    if not isinstance(rows, list):
        raise ManifestError(f"{where}: \"files\" must be a list of file entries, found {_json_type(rows)}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: files[{index}] must be an object, found {_json_type(row)}")
        if "file" not in row:
            raise ManifestError(f"{where}: files[{index}] has no \"file\" name")
        for field in STRING_FIELDS:
            if row.get(field) is not None and not isinstance(row[field], str):
                raise ManifestError(f"{where}: files[{index}].{field} must be a string, found {_json_type(row[field])}")
        for field in ("calibration", "zoom"):
            if row.get(field) is not None and not isinstance(row[field], dict):
                raise ManifestError(f"{where}: files[{index}].{field} must be an object or null")


def file_rows(manifest: dict | None) -> list[dict]:
    """The entries of a checked manifest that name a file (not those of failed formats); none without one."""
    return [row for row in manifest.get("files", []) if row["file"] is not None] if manifest else []
