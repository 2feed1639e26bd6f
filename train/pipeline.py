"""The training input pipeline: shuffling and augmentation in numpy.

Augmentation lives here rather than in the model, so exported models carry none of it,
and in numpy rather than tf.data, so the same pipeline feeds the TensorFlow and JAX
backends.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import keras
import numpy as np

from cifar_edge.runtime.labels import NUM_CLASSES


@dataclass(frozen=True)
class Augmentation:
    """Each image's translation and mirroring in one batch."""

    dy: np.ndarray
    """Rows each image's content moves down (negative: up), as ints."""
    dx: np.ndarray
    """Columns each image's content moves right (negative: left), as ints."""
    mirrored: np.ndarray
    """Whether each image is mirrored left to right (after the shift)."""


def draw_augmentation(rng: np.random.Generator, count: int, flip: bool, shift_pixels: int) -> Augmentation:
    """Random translations of up to `shift_pixels` each way and, with `flip`, random mirroring."""
    if shift_pixels:
        # The crop's top-left corner in the padded image; content moves by pad - corner.
        dy = shift_pixels - rng.integers(0, 2 * shift_pixels + 1, count)
        dx = shift_pixels - rng.integers(0, 2 * shift_pixels + 1, count)
    else:
        dy = dx = np.zeros(count, np.int64)
    mirrored = rng.random(count) < 0.5 if flip else np.zeros(count, bool)
    return Augmentation(dy, dx, mirrored)


def apply_augmentation(images: np.ndarray, augmentation: Augmentation, pad: int) -> np.ndarray:
    """The batch of NHWC images translated (reflect-padded by `pad` >= every shift) and mirrored."""
    count, height, width = images.shape[:3]
    out = images
    if pad:
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        rows = (pad - augmentation.dy)[:, None] + np.arange(height)
        cols = (pad - augmentation.dx)[:, None] + np.arange(width)
        # One gather crops every image at its own offset.
        out = padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
    mirrored = augmentation.mirrored
    if mirrored.any():
        out = out.copy() if out is images else out
        out[mirrored] = out[mirrored, :, ::-1]
    return out


def augment(images: np.ndarray, rng: np.random.Generator, flip: bool, shift_pixels: int) -> np.ndarray:
    """Randomly translate (reflect-padded) and horizontally flip a batch of NHWC images."""
    return apply_augmentation(images, draw_augmentation(rng, len(images), flip, shift_pixels), shift_pixels)


# Zoom-out shrinks an image to this share of its side, or more, on a background. 0.5 reaches a
# subject that fills half of a camera frame's centre square (benchmarks/scenes.py's smallest fill).
ZOOM_OUT_MIN_SCALE = 0.5
# The zoom-out draws use their own random stream: (seed, epoch, batch, this), so enabling it
# leaves the shuffling, shifts and flips of every batch as they were without it.
_ZOOM_STREAM = 2


def zoom_out(images: np.ndarray, backgrounds: np.ndarray, rng: np.random.Generator, probability: float,
             min_scale: float = ZOOM_OUT_MIN_SCALE) -> np.ndarray:
    """A `probability` share of `images`, each shrunk to `min_scale`..1 of its side and placed
    at a random position on a random row of `backgrounds`; the others unchanged.

    The background is another training image, not a flat fill: around a subject a camera
    sees clutter. Shrinking uses area interpolation, as the runtime's downscaling of frames.
    """
    count, size = len(images), images.shape[1]
    chosen = np.flatnonzero(rng.random(count) < probability)
    if not len(chosen):
        return images
    sides = np.round(size * rng.uniform(min_scale, 1.0, len(chosen))).astype(np.int64)
    sources = rng.integers(0, len(backgrounds), len(chosen))
    tops, lefts = rng.integers(0, size - sides + 1), rng.integers(0, size - sides + 1)
    out = images.copy()
    for index, side, source, top, left in zip(chosen, sides, sources, tops, lefts, strict=True):
        canvas = backgrounds[source].copy()
        canvas[top : top + side, left : left + side] = cv2.resize(images[index], (int(side), int(side)), interpolation=cv2.INTER_AREA)
        out[index] = canvas
    return out


@dataclass(frozen=True)
class ViewGrid:
    """A grid of fixed augmentation views: every shift pair on `shifts`, each way of `flips`.

    A teacher's outputs are cached for these views; a randomly augmented image takes the
    output of its nearest view (the same one when its shift lies on the grid).
    """

    shifts: tuple[int, ...]
    """Shifts, in pixels, on both axes (e.g. -4, 0, 4)."""
    flips: tuple[bool, ...]
    """(False,), or (False, True) when training mirrors images."""

    @classmethod
    def for_recipe(cls, shift_pixels: int, step: int, flip: bool) -> ViewGrid:
        """Shifts that are multiples of `step` within +-`shift_pixels` (only 0 when `step` is 0)."""
        shifts = tuple(range(-(shift_pixels // step) * step, shift_pixels + 1, step)) if step and shift_pixels else (0,)
        return cls(shifts, (False, True) if flip else (False,))

    def views(self) -> list[tuple[int, int, bool]]:
        """(dy, dx, mirrored) of every view, in cache order."""
        return [(dy, dx, mirrored) for dy in self.shifts for dx in self.shifts for mirrored in self.flips]

    def __len__(self) -> int:
        return len(self.shifts) ** 2 * len(self.flips)

    @property
    def pad(self) -> int:
        return max(abs(shift) for shift in self.shifts)

    def batch(self, images: np.ndarray, view: tuple[int, int, bool]) -> np.ndarray:
        """`images` seen through one view."""
        count = len(images)
        dy, dx, mirrored = view
        augmentation = Augmentation(np.full(count, dy), np.full(count, dx), np.full(count, mirrored))
        return apply_augmentation(images, augmentation, self.pad)

    def index(self, augmentation: Augmentation) -> np.ndarray:
        """Each image's nearest view; a tie goes to the smaller shift (+2 and -2 both to 0 on a -4/0/4 grid)."""
        shifts = np.asarray(self.shifts)
        # Distance first, then |shift|: both are whole numbers, so one integer key orders them.
        key = 2 * np.abs(shifts).max(initial=0) + 1

        def nearest(offsets):
            return (np.abs(offsets[:, None] - shifts) * key + np.abs(shifts)).argmin(axis=1)

        row, col = nearest(augmentation.dy), nearest(augmentation.dx)
        flip = augmentation.mirrored.astype(np.int64) if len(self.flips) == 2 else 0
        return (row * len(shifts) + col) * len(self.flips) + flip


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled, augmented batches of (uint8 images, targets).

    Targets are one-hot labels, followed, when `teacher` is given, by the teacher's
    log-probabilities for each image's nearest cached view (`teacher`: an array
    (images, views, classes) over the views of `grid`).

    With `zoom_out` (a probability), images are also shrunk onto another training image
    after the shift and flip (`zoom_out()`); a teacher's target stays that of the unshrunk
    view, since the subject, and so its class, is the same.

    The order and the augmentation of batch `i` in epoch `e` depend only on
    (seed, e, i), so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, images, labels, batch_size: int, *, flip: bool, shift_pixels: int, seed: int, first_epoch: int = 0,
                 alternating_flip: bool = False, drop_last: bool = False, teacher: np.ndarray | None = None,
                 grid: ViewGrid | None = None, zoom_out: float = 0.0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.labels, self.zoom_out = images, labels, zoom_out
        self.batch_size, self.flip, self.shift_pixels, self.seed = batch_size, flip, shift_pixels, seed
        self.drop_last = drop_last and len(labels) >= batch_size
        if (teacher is None) != (grid is None) or (teacher is not None and teacher.shape[:2] != (len(labels), len(grid))):
            raise ValueError("teacher outputs need their view grid, one row per image and one column per view")
        self.teacher, self.grid = teacher, grid
        # Alternating flip (airbench): one random flip per image for the first epoch, the
        # opposite in every odd epoch. It replaces the per-batch random flip.
        self.base_flips = np.random.default_rng((seed, 1 << 20)).random(len(labels)) < 0.5 if flip and alternating_flip else None
        self.epoch = first_epoch
        self._order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.labels))

    def __len__(self) -> int:
        count = len(self.labels) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def flips(self, chosen: np.ndarray) -> np.ndarray:
        """Which of the images `chosen` (indices into the split) are mirrored this epoch, for alternating flip."""
        return self.base_flips[chosen] ^ bool(self.epoch % 2)

    def __getitem__(self, index: int):
        chosen = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        augmentation = draw_augmentation(rng, len(chosen), self.flip and self.base_flips is None, self.shift_pixels)
        if self.base_flips is not None:
            augmentation = dataclasses.replace(augmentation, mirrored=self.flips(chosen))
        images = apply_augmentation(self.images[chosen], augmentation, self.shift_pixels)
        if self.zoom_out:
            images = zoom_out(images, self.images, np.random.default_rng((self.seed, self.epoch, index, _ZOOM_STREAM)), self.zoom_out)
        targets = one_hot(self.labels[chosen])
        if self.teacher is not None:
            targets = np.concatenate([targets, self.teacher[chosen, self.grid.index(augmentation)]], axis=1)
        return images, targets

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._shuffle()
