"""cifar_edge.runtime: the TensorFlow-free layer every other part stands on.

It holds the class names, the data loader and image preprocessing. Keep this import
light: engines and heavy libraries are imported where they are used.
"""

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.labels import CLASS_NAMES, NUM_CLASSES

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "CifarEdgeError"]
