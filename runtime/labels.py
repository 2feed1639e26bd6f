"""CIFAR-10 class names in the standard label order 0..9, and the model contract every format keeps."""

CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CLASS_NAMES)

IMAGE_SIZE = 32
INPUT_CONTRACT = {"dtype": "uint8", "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 3], "layout": "NHWC", "color": "RGB", "range": [0, 255]}
OUTPUT_CONTRACT = {"dtype": "float32", "shape": [None, NUM_CLASSES], "meaning": "class probabilities (softmax)"}
