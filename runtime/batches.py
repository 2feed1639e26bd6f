"""The official python batches (`cifar-10-python.tar.gz`), read with an unpickler that builds numpy arrays and nothing else."""

from __future__ import annotations

import importlib
import io
import pickle

import numpy as np

from cifar_edge.runtime.dataset import Cifar10, DataError, Split
from cifar_edge.runtime.labels import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_BATCH_FILES = (*_TRAIN_BATCHES, "test_batch")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles the official batch dicts, refusing every global but numpy's array rebuild.

    A pickle can name any importable callable; this one resolves only the handful that
    rebuild an ndarray, so a crafted file fails here instead of running its payload.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes bytes in protocol 2 as _codecs.encode(str, "latin1").
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name}")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return getattr(importlib.import_module(module), name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        loaded = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise DataError(
            f"{where}: refused: the pickle asks for {error}, which an official CIFAR-10 batch never does"
        ) from None
    except Exception as error:  # a damaged pickle can raise almost anything
        raise DataError(f"{where}: damaged batch file ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{where}: not a CIFAR-10 batch (holds {type(loaded).__name__})")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in loaded.items()}


def _batch_arrays(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(data, where)
    pixels, labels = batch.get("data"), batch.get("labels")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise DataError(f"{where}: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(pixels),) or (labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES)):
        raise DataError(f"{where}: 'labels' must hold one class id in 0..9 per image")
    # Rows are planar R, G, B planes of 32x32; the contract is interleaved HWC RGB.
    images = pixels.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def _from_python_batches(files: dict[str, bytes], source: str) -> Cifar10:
    train = [_batch_arrays(files[name], f"{source}:{name}") for name in _TRAIN_BATCHES]
    test = _batch_arrays(files["test_batch"], f"{source}:test_batch")
    return Cifar10(
        train=Split(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
        test=Split(*test),
        class_names=CLASS_NAMES,
        source=source,
    )
