"""Camera-like test material made from CIFAR-10 test images: photos and 640x480 video clips.

Each 32x32 image is upscaled (cubic) into a centred square filling the frame's height, the
way a camera frames a subject, with black bars at the sides. Classifying these through
`cifar-run` exercises decoding, colour conversion, cropping and area resizing, and the
labels are known, so accuracy can be compared with the raw images.

    python -m cifar_edge.benchmarks.clips --out samples    # the bundled `make demo` samples
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from cifar_edge.runtime.cli import VIDEO_CODECS
from cifar_edge.runtime.data import load_cifar10, resolve_source
from cifar_edge.runtime.errors import ArgumentParser, CifarEdgeError, run_cli
from cifar_edge.runtime.files import atomic_path, writable_dir
from cifar_edge.runtime.labels import CLASS_NAMES

FRAME_SIZE = (640, 480)


def frame_around(rgb: np.ndarray, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """`rgb` upscaled into the centre of a (width, height) black frame; returns BGR for OpenCV writers."""
    width, height = size
    side = min(width, height)
    frame = np.zeros((height, width, 3), np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    frame[top : top + side, left : left + side] = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)


def write_clip(images: np.ndarray, path: Path, *, size=FRAME_SIZE, fps: float = 20.0, frames_per_image: int = 1) -> Path:
    """A video with each image held for `frames_per_image` frames, in `cifar-run --save`'s codec for its suffix."""
    path = Path(path)
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise CifarEdgeError(f"{path}: use a {' or '.join(VIDEO_CODECS)} name")
    with atomic_path(path) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not writer.isOpened():
            raise CifarEdgeError(f"{path}: OpenCV cannot write {codec} video here")
        try:
            for rgb in images:
                frame = frame_around(rgb, size)
                for _ in range(frames_per_image):
                    writer.write(frame)
        finally:
            writer.release()
    return path


def write_photos(images: np.ndarray, names: list[str], folder: Path, *, side: int = 256, quality: int = 92) -> list[Path]:
    """Each image upscaled to side x side and saved as JPEG, like a phone photo of the subject."""
    folder = writable_dir(folder)
    paths = []
    for rgb, name in zip(images, names):
        path = folder / f"{name}.jpg"
        big = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_CUBIC)
        with atomic_path(path) as temporary:
            if not cv2.imwrite(str(temporary), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
                raise CifarEdgeError(f"{path}: could not write JPEG")
        paths.append(path)
    return paths


def make_samples(data: str | None, out: Path) -> list[Path]:
    """The first test image of each class as a photo, and a 5-second clip of all ten."""
    dataset = load_cifar10(resolve_source(data))  # None: $CIFAR10_DATA, else the download
    first = [int(np.flatnonzero(dataset.test.labels == class_id)[0]) for class_id in range(len(CLASS_NAMES))]
    images = dataset.test.images[first]
    photos = write_photos(images, [f"{i:02d}-{name}" for i, name in enumerate(CLASS_NAMES)], Path(out) / "images")
    clip = write_clip(images, writable_dir(out) / "clip.mp4", fps=10.0, frames_per_image=5)
    return [*photos, clip]


def main(argv: list[str] | None = None) -> int:
    def body():
        parser = ArgumentParser(prog="python -m cifar_edge.benchmarks.clips", description="Write the bundled sample photos and clip.")
        parser.add_argument("--data", help="CIFAR-10 source (default: $CIFAR10_DATA, else download)")
        parser.add_argument("--out", type=Path, required=True)
        args = parser.parse_args(argv)
        for path in make_samples(args.data, args.out):
            print(path)

    return run_cli("clips", body)


if __name__ == "__main__":
    sys.exit(main())
