"""User-facing errors and the CLI plumbing that reports them in one line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from cifar_edge.runtime import quiet


class CifarEdgeError(Exception):
    """Bad input from the user: reported as one line, with no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`), exit 2.

    Every CLI gets `--verbose`: the native libraries' log lines (TensorFlow, LiteRT, FFmpeg) are
    quiet unless it is given (see `quiet`), and the choice is made as the arguments are parsed,
    before any of those libraries starts.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true",
                          help="also show the native libraries' own log lines (TensorFlow, LiteRT, FFmpeg), quiet by default")

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        quiet.configure(verbose=bool(getattr(parsed, "verbose", False)))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _whole_number(minimum: int, wanted: str):
    """An argparse type for whole numbers >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


positive_int = _whole_number(1, "a positive whole number")
non_negative_int = _whole_number(0, "a whole number >= 0")


def _number(minimum: float, inclusive: bool, wanted: str):
    """An argparse type for finite numbers above (or from) `minimum`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        # NaN fails both comparisons, so it is refused with the rest.
        if value is None or value == float("inf") or not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    return parse


positive_float = _number(0.0, inclusive=False, wanted="a positive number")
non_negative_float = _number(0.0, inclusive=True, wanted="a number >= 0")


def run_cli(prog: str, main: Callable[[], int | None]) -> int:
    """Run a console script body, mapping user errors to `prog: error: ...` and exit 2.

    Every console script goes through here so that bad input never shows a traceback,
    while a genuine bug (any other exception) still does.
    """
    # Our own messages only: the root logger stays quiet, so converters' INFO chatter does not show.
    logger = logging.getLogger("cifar_edge")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        code = int(main() or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader went away (`cifar-run --json ... | head -1`): stop quietly, as Unix tools do.
        _stdout_to_devnull()
        return 128 + 13  # what a shell reports for a process ended by SIGPIPE
    except CifarEdgeError as error:
        message = " ".join(str(error).split())  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        # The handler holds the stderr of this call; a later caller (a test, a notebook) may have another.
        logger.removeHandler(handler)


def _stdout_to_devnull() -> None:
    """Point fd 1 at /dev/null, so the interpreter's last flush of stdout finds no closed pipe."""
    import io
    import os

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return  # a stdout with no file descriptor (a test's capture) has no pipe to close
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
