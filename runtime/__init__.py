"""cifar_edge.runtime: the TensorFlow-free layer every other part stands on.

It holds the class names, the data loader, image preprocessing, the engines and the
`Classifier`. Keep this import light: engines and heavy libraries are imported where they
are used, and `Classifier` itself is loaded on first use.
"""

import os

#: The largest image decoded, in pixels. A 48 KB PNG can declare 20,000 x 20,000 pixels, 1.2 GB
#: of RGB, more than a small Pi has; OpenCV's own limit is 2**30. OpenCV reads the variable once,
#: as it loads, so it is set here, before any module of the runtime imports cv2; set it yourself
#: (before importing cv2 or cifar_edge) to choose another.
MAX_IMAGE_PIXELS_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
os.environ.setdefault(MAX_IMAGE_PIXELS_VARIABLE, str(1 << 28))

from cifar_edge.runtime.errors import CifarEdgeError  # noqa: E402  (after the limit above)
from cifar_edge.runtime.labels import CLASS_NAMES, NUM_CLASSES  # noqa: E402

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "CifarEdgeError", "Classifier", "Prediction"]


def __getattr__(name: str):
    if name in ("Classifier", "Prediction"):
        from cifar_edge.runtime import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
