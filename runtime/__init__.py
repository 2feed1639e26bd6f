"""cifar_edge.runtime: the TensorFlow-free layer every other part stands on.

It holds the class names, the data loader, image preprocessing, the engines and the
`Classifier`. Keep this import light: engines and heavy libraries are imported where they
are used, and `Classifier` itself is loaded on first use.
"""

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.labels import CLASS_NAMES, NUM_CLASSES

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "CifarEdgeError", "Classifier", "Prediction"]


def __getattr__(name: str):
    if name in ("Classifier", "Prediction"):
        from cifar_edge.runtime import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
