"""Frame sources: image files, video files and cameras behind one iterator of `Frame`s.

Every source hands out RGB. OpenCV (and picamera2's "RGB888", which is B, G, R in memory)
deliver BGR, so each source converts exactly once, here, and nothing downstream swaps again.
"""

from __future__ import annotations

import glob
import importlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cifar_edge.runtime import MAX_IMAGE_PIXELS_VARIABLE
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.preprocess import IMAGE_SUFFIXES, decode_rgb
from cifar_edge.runtime.quiet import is_verbose, native_notices_filtered

#: How long a camera may go without a new frame before it counts as disconnected.
CAMERA_TIMEOUT_S = 5.0


class SourceError(CifarEdgeError):
    """A stream that cannot be opened or stops delivering: the run cannot go on."""


@dataclass
class Frame:
    """One image or video frame, or the reason it could not be read."""

    source: str
    index: int | None
    """Frame number within a stream (a camera's count includes frames dropped as stale); None for image files."""
    image: np.ndarray | None
    """H x W x 3 uint8 RGB, or None when `error` says why it is missing."""
    read_ms: float
    """Time to capture or read and decode it."""
    error: str | None = None


class FrameSource:
    """Iterate to get frames; `close()` releases the device. Also a context manager."""

    name = ""
    is_stream = False
    fps: float | None = None
    """The stream's own frame rate when it declares one."""

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def expand_inputs(patterns: list[str]) -> list[Path | str]:
    """Files as given, folders searched recursively for images, globs expanded; in that order.

    A pattern that matches nothing is kept as a string, so it becomes an error record
    instead of silently vanishing.
    """
    found: list[Path | str] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            found.extend(images or [f"{pattern}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})"])
        elif path.exists():
            found.append(path)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())
            found.extend(matches or [f"{pattern}: no files match"])
        else:
            found.append(f"{pattern}: no such file or folder")
    return found


def read_image_file(path: Path) -> np.ndarray:
    """An image file as RGB uint8; ValueError with the reason when it is not one."""
    data = path.read_bytes()
    if not data:
        raise ValueError("empty file")
    # libjpeg and libpng report damage ("Corrupt JPEG data", "libpng error") from C; the record says it.
    with native_notices_filtered():
        rgb = decode_rgb(data)
    if rgb is None:
        raise ValueError(f"not a readable image (unknown format, truncated, or over the {MAX_IMAGE_PIXELS_VARIABLE} "
                         f"limit of {os.environ[MAX_IMAGE_PIXELS_VARIABLE]} pixels)")
    return rgb


class ImageFiles(FrameSource):
    """Image files, read one at a time; an unreadable one becomes a Frame with an error."""

    name = "images"

    def __init__(self, patterns: list[str]):
        self.inputs = expand_inputs(patterns)
        _silence_opencv()

    def __iter__(self) -> Iterator[Frame]:
        for item in self.inputs:
            if isinstance(item, str):
                source, _, reason = item.partition(": ")
                yield Frame(source, None, None, 0.0, reason)
                continue
            start = time.perf_counter()
            try:
                image = read_image_file(item)
                error = None
            except (OSError, ValueError) as problem:
                image, error = None, getattr(problem, "strerror", None) or str(problem)
            yield Frame(str(item), None, image, (time.perf_counter() - start) * 1000, error)


def _silence_opencv() -> None:
    # OpenCV's backends and decoders print multi-line warnings and errors about an input (a missing device,
    # a damaged file) that we report in one line ourselves; `--verbose` keeps them.
    if is_verbose():
        return
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)


class VideoFile(FrameSource):
    """Every frame of a video file, in order, none skipped."""

    name = "video"
    is_stream = True

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise SourceError(f"--video {self.path}: is a folder; give a video file (for a folder of photos, pass it as PATH)")
        if not self.path.is_file():
            raise SourceError(f"--video {self.path}: no such file")
        _silence_opencv()
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise SourceError(f"--video {self.path}: cannot be opened as a video")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or None
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            start = time.perf_counter()
            ok, bgr = self._capture.read()
            if not ok:
                return
            yield Frame(str(self.path), index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (time.perf_counter() - start) * 1000)
            index += 1

    def close(self) -> None:
        self._capture.release()


class Camera(FrameSource):
    """A live camera, read on a background thread that keeps only the newest frame.

    OpenCV queues frames inside the driver; a consumer slower than the camera would see
    ever older pictures. The reader thread drains the queue continuously, and each
    `__iter__` step waits for a frame it has not handed out yet, so results are always
    about now. `spec` is an index (`0`), a device (`/dev/video0`), a URL (`rtsp://...`),
    or `csi` for a Raspberry Pi camera module through picamera2.
    """

    name = "camera"
    is_stream = True

    def __init__(self, spec: str | int = 0, timeout_s: float = CAMERA_TIMEOUT_S):
        self.spec = str(spec)
        self.timeout_s = timeout_s
        self._condition = threading.Condition()
        self._latest: tuple[int, np.ndarray, float] | None = None
        self._count = 0
        self._ended = False
        self._failure: str | None = None  # the driver's exception that ended the stream, for the user's error
        self._stop = threading.Event()
        self._grab, self._release = self._open(self.spec)
        self._thread = threading.Thread(target=self._read_forever, name=f"camera-{self.spec}", daemon=True)
        self._thread.start()

    def _open(self, spec: str):
        if spec in ("csi", "picamera2"):
            return self._open_picamera2()
        _silence_opencv()
        capture = cv2.VideoCapture(int(spec) if spec.isdigit() else spec)
        if not capture.isOpened():
            raise SourceError(f"--camera {spec}: cannot be opened (no such device, busy, or no permission)")
        # Ask the driver for the shortest queue it allows; the reader thread handles the rest.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.fps = capture.get(cv2.CAP_PROP_FPS) or None

        def grab():
            ok, bgr = capture.read()
            return bgr if ok else None

        return grab, capture.release

    def _open_picamera2(self):
        try:
            picamera2 = importlib.import_module("picamera2")
        except ImportError:
            raise SourceError(
                "--camera csi: picamera2 is not installed (on Pi OS Bookworm: sudo apt install python3-picamera2, "
                "and create the venv with --system-site-packages)"
            ) from None
        try:
            camera = picamera2.Picamera2()
            # "RGB888" is 24-bit with bytes ordered B, G, R: the same as OpenCV, converted below like it.
            camera.configure(camera.create_video_configuration(main={"format": "RGB888", "size": (640, 480)}))
            camera.start()
        except Exception as error:  # picamera2/libcamera raise assorted types for a missing or busy camera
            raise SourceError(f"--camera csi: cannot be opened ({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None

        def release():
            camera.stop()
            camera.close()

        return camera.capture_array, release

    def _read_forever(self) -> None:
        while not self._stop.is_set():
            try:
                bgr = self._grab()
            except Exception as error:  # a driver error mid-stream ends the stream; __iter__ reports it with this reason
                self._failure = f"{type(error).__name__}: {' '.join(str(error).split())[:200]}".rstrip(": ")
                bgr = None
            with self._condition:
                if bgr is None:
                    self._ended = True
                    self._condition.notify_all()
                    return
                self._latest = (self._count, bgr, time.perf_counter())
                self._count += 1
                self._condition.notify_all()

    def _has_news(self, handed_out: int) -> bool:
        return self._ended or (self._latest is not None and self._latest[0] > handed_out)

    def __iter__(self) -> Iterator[Frame]:
        handed_out = -1
        while True:
            start = time.perf_counter()
            with self._condition:
                fresh = self._condition.wait_for(lambda seen=handed_out: self._has_news(seen), timeout=self.timeout_s)
                latest = self._latest
                ended = self._ended
            if latest is not None and latest[0] > handed_out:
                handed_out, bgr, _ = latest
                yield Frame(f"camera:{self.spec}", handed_out, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (time.perf_counter() - start) * 1000)
                continue
            frames = self._count
            if ended:
                reason = f"the driver said {self._failure}" if self._failure else "disconnected?"
                raise SourceError(f"--camera {self.spec}: stream ended after {frames} frames ({reason})")
            if not fresh:
                raise SourceError(f"--camera {self.spec}: no frame for {self.timeout_s:g} s after {frames} frames (disconnected?)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._release()
