"""Image geometry shared by the data loader and the classifier."""

from __future__ import annotations

import cv2
import numpy as np

FITS = ("crop", "pad", "stretch")


def fit_square(image: np.ndarray, size: int = 32, fit: str = "crop") -> np.ndarray:
    """Return `image` (H x W x C uint8) as size x size.

    `crop` takes the centred square, `pad` letterboxes with black, `stretch` ignores the
    aspect ratio. Area interpolation is used when shrinking because it averages the pixels
    it drops instead of aliasing them.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, not {fit!r}")
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        image = image[top : top + side, left : left + side]
    elif fit == "pad":
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        image = cv2.copyMakeBorder(
            image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0
        )
    shrinking = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
