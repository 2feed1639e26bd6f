"""CIFAR-10 in memory: the splits as uint8 arrays, class-balanced subsets of them, and the data error."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.labels import CLASS_NAMES, NUM_CLASSES


class DataError(CifarEdgeError):
    """The data source is missing, malformed, hostile or fails its checksum."""


@dataclass(frozen=True)
class Split:
    """One split: images (N, 32, 32, 3) uint8 RGB and labels (N,) uint8 in 0..9."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=NUM_CLASSES)

    def balanced_subset(self, count: int, seed: int = 0) -> Split:
        """`count` images drawn class by class in turn, so every class stays represented."""
        if count >= len(self):
            return self
        chosen = balanced_indices(self.labels, count, seed)
        return Split(self.images[chosen], self.labels[chosen])

    def fingerprint(self) -> str:
        """sha256 of the pixels and labels: what a cache or a held-out set belongs to."""
        digest = hashlib.sha256(np.ascontiguousarray(self.images).data)
        digest.update(np.ascontiguousarray(self.labels, np.int64).data)
        return digest.hexdigest()

    def balanced_split(self, count: int, seed: int = 0) -> tuple[Split, Split]:
        """(the rest, `count` class-balanced images held out): disjoint, together the whole split."""
        held = balanced_indices(self.labels, count, seed)
        rest = np.setdiff1d(np.arange(len(self)), held)
        return Split(self.images[rest], self.labels[rest]), Split(self.images[held], self.labels[held])


def balanced_indices(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `count` items, dealt from the classes in turn in a seeded order."""
    order = np.random.default_rng(seed).permutation(len(labels))
    # Rank of each item within its class in the shuffled order; taking the lowest ranks
    # first deals the classes out like cards.
    rank = np.empty(len(labels), dtype=np.int64)
    for class_id in range(NUM_CLASSES):
        members = order[labels[order] == class_id]
        rank[members] = np.arange(len(members))
    return np.sort(order[np.lexsort((np.arange(len(order)), rank[order]))][:count])


@dataclass(frozen=True)
class Cifar10:
    """Both splits, the class names and where they came from."""

    train: Split
    test: Split
    class_names: tuple[str, ...] = CLASS_NAMES
    source: str = ""
    #: Unreadable images that were skipped (paths relative to the source).
    skipped: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """A table of image counts per class and split."""
        width = max(len(name) for name in self.class_names)
        lines = [f"data: {self.source}", f"{'class':<{width}}  {'train':>6}  {'test':>6}"]
        for name, n_train, n_test in zip(
            self.class_names, self.train.class_counts(), self.test.class_counts(), strict=True
        ):
            lines.append(f"{name:<{width}}  {n_train:>6}  {n_test:>6}")
        lines.append(f"{'total':<{width}}  {len(self.train):>6}  {len(self.test):>6}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable images")
        return "\n".join(lines)
