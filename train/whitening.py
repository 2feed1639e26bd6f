"""Data-dependent and identity initialisations for the speed-record net, in numpy.

Both produce plain weight arrays that are set on built-in Keras layers, so a saved model
holds them as ordinary weights and loads with plain Keras.
"""

from __future__ import annotations

import numpy as np

# airbench94's eps: keeps the weakest patch directions (eigenvalues near zero) from
# being amplified without bound.
WHITENING_EPS = 5e-4
# airbench94 estimates the patch covariance from the first 5,000 training images.
WHITENING_IMAGES = 5000


def whitening_kernel(images: np.ndarray, size: int = 2, eps: float = WHITENING_EPS) -> np.ndarray:
    """A (size, size, C, 2*size*size*C) Conv2D kernel that whitens size x size patches.

    `images` are NHWC floats, already standardised as the model standardises them. The
    filters are the eigenvectors of the (uncentred) patch covariance, largest eigenvalue
    first, each divided by sqrt(eigenvalue + eps); the second half is the negation of the
    first, so a following GELU passes both signs of every direction.
    """
    images = np.asarray(images, np.float64)
    count, height, width, channels = images.shape
    # Every size x size patch, flattened in the kernel's (row, column, channel) order.
    patches = np.stack(
        [images[:, r : height - size + 1 + r, c : width - size + 1 + c, :] for r in range(size) for c in range(size)], axis=3
    ).reshape(-1, size * size * channels)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]  # largest first
    filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0) + eps)
    kernel = filters.reshape(size, size, channels, -1)
    return np.concatenate([kernel, -kernel], axis=-1).astype(np.float32)


def with_identity(kernel: np.ndarray) -> np.ndarray:
    """`kernel` (kh, kw, C_in, C_out) with its first C_in filters set to the identity (dirac).

    PyTorch's `dirac_` on the first C_in output channels: at initialisation those channels
    pass their input through, which makes a deep stack of convs start close to shallow.
    """
    kernel = np.array(kernel, copy=True)
    kh, kw, channels_in, channels_out = kernel.shape
    identity = min(channels_in, channels_out)
    kernel[:, :, :, :identity] = 0
    kernel[kh // 2, kw // 2, np.arange(identity), np.arange(identity)] = 1
    return kernel
