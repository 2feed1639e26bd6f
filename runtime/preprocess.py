"""Image geometry shared by the data loader and the classifier."""

from __future__ import annotations

import cv2
import numpy as np

FITS = ("crop", "pad", "stretch")
#: What `decode_rgb` (OpenCV's imdecode) reads: the one list folder scans of the runtime and the data loader use.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")


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


def zoom_views(image: np.ndarray, size: int, fit: str, zoom: tuple[float, ...]) -> np.ndarray:
    """(len(zoom), size, size, C): the image made square by `fit`, then its centred crops of
    each fraction of the side (1.0: the whole square), each resized to size x size."""
    if zoom == (1.0,):
        return fit_square(image, size, fit)[None]
    height, width = image.shape[:2]
    if fit == "crop":
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top : top + side, left : left + side]
    else:
        square = fit_square(image, max(height, width), fit)
    side = square.shape[0]
    views = []
    for fraction in zoom:
        crop = max(1, round(side * fraction))
        start = (side - crop) // 2
        views.append(fit_square(square[start : start + crop, start : start + crop], size, "crop"))
    return np.stack(views)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any H x W image as H x W x 3 uint8 RGB.

    Accepts gray (H x W or H x W x 1), RGB and RGBA (alpha dropped, as PIL's convert("RGB")
    does), in 8 or 16 bits. Colour order is not guessed: callers hand in RGB, and frames
    from OpenCV are converted where they are read, once.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an H x W or H x W x C image, got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got {image.shape[2]}")
    if image.dtype == np.uint16:
        # Round to nearest rather than shift, so 65535 maps to 255 and mid-grey stays mid-grey.
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Encoded image bytes as H x W x 3 uint8 RGB, or None if they are not a readable image.

    The one place file bytes become pixels, for the data loader and the runtime alike.
    IMREAD_COLOR gives 3-channel 8-bit from gray, alpha and 16-bit files and applies EXIF
    orientation; OpenCV's BGR is turned into RGB here, once.
    """
    if not data:
        return None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # a header OpenCV refuses outright, e.g. dimensions over its pixel limit
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
