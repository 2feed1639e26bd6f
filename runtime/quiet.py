"""Native libraries' log noise: quiet by default, shown with `--verbose`.

TensorFlow, LiteRT, the TFLite converter and OpenCV's FFmpeg print from C++ straight to file
descriptor 2, before and around our own one-line messages. Each library's own knob is used
first, set in the environment before the library starts:

- `TF_CPP_MIN_LOG_LEVEL=3`: TensorFlow's C++ log, including the "failed call to cuInit" a CUDA
  build prints on a machine without a GPU (an ERROR-level line that reads like a failure).
- `OPENCV_FFMPEG_LOGLEVEL=-8` (FFmpeg's AV_LOG_QUIET): "moov atom not found" and the like, read
  when OpenCV first starts FFmpeg. Our own message says the file cannot be opened.

Some lines have no knob: TensorFlow prints its oneDNN, CUDA-driver and CPU-feature lines (twice,
once per library it loads, with absl's "before absl::InitializeLog()" notice) while it is
imported, before any level applies, and LiteRT's minimal logger prints "Created TensorFlow Lite
XNNPACK delegate" whatever the level. Around those known calls only (the import of TensorFlow,
building a LiteRT interpreter, the TFLite converter), fd 2 goes to a temporary file, and
afterwards every line that is not a known notice is written back to stderr. Nothing is thrown
away unread, so an error printed in that window (ours or a library's) still shows.

A user's own settings of these variables are kept. `--verbose` (every CLI has it) turns all of
this off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: Library notices that carry no news for a user; every other line in a filtered window is kept.
NOTICES = re.compile(
    "|".join(
        (
            r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
            r"oneDNN custom operations are on",
            r"Could not find cuda drivers on your machine",
            r"failed call to cuInit",
            r"This TensorFlow binary is optimized to use available CPU instructions",
            r"rebuild TensorFlow with the appropriate compiler flags",
            r"Unable to register cu(DNN|FFT|BLAS) factory",
            r"computation placer already registered",
            r"Created TensorFlow Lite XNNPACK delegate for CPU",
            r"fully_quantize: \d+, inference_type: \d+",
            r"Estimated count of arithmetic ops",
            r"Corrupt JPEG data",
            r"Premature end of JPEG file",
            r"Invalid SOS parameters for sequential JPEG",
            r"Unsupported marker type",
            r"libpng (warning|error)",
            r"^\[ *(WARN|INFO):\d+@",  # OpenCV's own log, for a codec that warns before we report the file
        )
    )
)
#: Modules whose import prints notices no level reaches.
NOISY_IMPORTS = ("tensorflow",)
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "OPENCV_FFMPEG_LOGLEVEL": "-8"}

_verbose = False
_depth = 0
_held = None


def configure(verbose: bool = False) -> None:
    """Quiet the native logs (or not, with `verbose`); call before the libraries start."""
    global _verbose
    _verbose = verbose
    if verbose:
        # The CLIs that import TensorFlow set level 2 for plain library use; --verbose shows everything.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _QuietImports)]
        return
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not any(isinstance(finder, _QuietImports) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImports())


def is_verbose() -> bool:
    return _verbose


@contextmanager
def native_notices_filtered() -> Iterator[None]:
    """Hold what native code writes to fd 2, then write back every line that is not a known notice."""
    global _depth, _held
    if _verbose or _depth:  # an enclosing window holds fd 2 already
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 to borrow (a closed or replaced stderr): nothing to filter
        yield
        return
    if _held is None:
        _held = tempfile.TemporaryFile()  # one per process: a new one per window costs more than the window
    _held.seek(0)
    _held.truncate()
    os.dup2(_held.fileno(), 2)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        try:
            sys.stderr.flush()  # Python's own writes in the window land in the held file too, in order
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        _held.seek(0)
        kept = [line for line in _held.read().decode(errors="replace").splitlines(keepends=True) if not NOTICES.search(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietImports(importlib.abc.MetaPathFinder):
    """Runs the first import of a NOISY_IMPORTS module inside `native_notices_filtered`."""

    def find_spec(self, name, path=None, target=None):
        if name not in NOISY_IMPORTS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with native_notices_filtered():
            self.loader.exec_module(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... as the real loader has them
        return getattr(self.loader, name)
