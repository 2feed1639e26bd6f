"""Atomic writes: a file appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cifar_edge.runtime.errors import CifarEdgeError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; outputs should get the usual mode.
_FILE_MODE = 0o666 & ~_current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    The temporary name keeps the suffix, since some writers (Keras, OpenCV) choose the
    format by it. On failure the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    os.chmod(temporary, _FILE_MODE)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is an `atomic_path` temporary: a write in progress, or left by a killed one, never a whole file."""
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Fail early, creating nothing, if `path` could not become a writable folder."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise CifarEdgeError(f"{flag} {path}: cannot write there ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CifarEdgeError(f"{flag} {path}: cannot write there ({existing} is not writable)")
    return path


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Fail early, creating nothing, unless `path`'s folder exists and takes files."""
    path = Path(path).expanduser().absolute()
    folder = path.parent
    if not folder.exists():
        raise CifarEdgeError(f"{flag} {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise CifarEdgeError(f"{flag} {path}: {folder} is not a folder")
    if path.is_dir():
        raise CifarEdgeError(f"{flag} {path}: is a folder; give a file name")
    # Try it rather than ask os.access: root passes every access check, and some folders
    # (/proc, a read-only mount) refuse new files whatever their mode says.
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
    except OSError as error:
        raise CifarEdgeError(f"{flag} {path}: cannot write in {folder} ({error.strerror or error})") from None
    os.close(handle)
    os.unlink(probe)
    return path


def writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create `path` if needed and prove it can take files; one-line error if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / ".write-test"):
            pass
        (path / ".write-test").unlink()
    except OSError as error:
        raise CifarEdgeError(f"{flag} {path}: cannot write there ({error.strerror or error})") from None
    return path.resolve()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: str | os.PathLike, data: object) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
