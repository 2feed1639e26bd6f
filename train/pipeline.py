"""The training input pipeline: shuffling and augmentation in numpy.

Augmentation lives here rather than in the model, so exported models carry none of it,
and in numpy rather than tf.data, so the same pipeline feeds the TensorFlow and JAX
backends.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from cifar_edge.runtime.labels import NUM_CLASSES


def augment(images: np.ndarray, rng: np.random.Generator, flip: bool, shift_pixels: int) -> np.ndarray:
    """Randomly translate (reflect-padded) and horizontally flip a batch of NHWC images."""
    count, height, width = images.shape[:3]
    out = images
    if shift_pixels:
        pad = shift_pixels
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        top = rng.integers(0, 2 * pad + 1, count)
        left = rng.integers(0, 2 * pad + 1, count)
        rows = top[:, None] + np.arange(height)
        cols = left[:, None] + np.arange(width)
        # One gather crops every image at its own offset.
        out = padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mirrored = rng.random(count) < 0.5
        out = out.copy() if out is images else out
        out[mirrored] = out[mirrored, :, ::-1]
    return out


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled, augmented batches of (uint8 images, one-hot labels).

    The order and the augmentation of batch `i` in epoch `e` depend only on
    (seed, e, i), so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, images, labels, batch_size: int, *, flip: bool, shift_pixels: int, seed: int, first_epoch: int = 0,
                 alternating_flip: bool = False, drop_last: bool = False):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.labels = images, labels
        self.batch_size, self.flip, self.shift_pixels, self.seed = batch_size, flip, shift_pixels, seed
        self.drop_last = drop_last and len(labels) >= batch_size
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
        images = augment(self.images[chosen], rng, self.flip and self.base_flips is None, self.shift_pixels)
        if self.base_flips is not None:
            mirrored = self.flips(chosen)
            # `images` is a fresh array (fancy indexing copies), so mirror it in place.
            images[mirrored] = images[mirrored, :, ::-1]
        return images, one_hot(self.labels[chosen])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._shuffle()
