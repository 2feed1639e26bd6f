"""Save scikit-image's sample photos that show none of the ten CIFAR-10 classes, as PNG, for
`python -m cifar_edge.benchmarks.ood --photos DIR`.

scikit-image is not a dependency of this project: run this with a throwaway environment's Python, e.g.

    python3 -m venv /tmp/skimage && /tmp/skimage/bin/pip install scikit-image
    /tmp/skimage/bin/python tools/ood_photos.py /tmp/ood-photos

The list leaves out the samples that do show a class, or nearly (chelsea: a cat; horse; eagle: a bird;
rocket: close to an airplane), so every photo saved is a true "none of the classes". Standard library plus
scikit-image and its numpy only. Prints the folder; exits 2 with one line if scikit-image is missing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

#: scikit-image 0.26 `skimage.data` functions whose pictures are none of the ten classes.
SAMPLES = ("astronaut", "binary_blobs", "brick", "camera", "cell", "checkerboard", "clock", "coffee", "coins",
           "colorwheel", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms",
           "moon", "page", "retina", "text")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tools/ood_photos.py OUT_DIR", file=sys.stderr)
        return 2
    try:
        import numpy as np
        from skimage import data, io
    except ImportError as error:
        print(f"tools/ood_photos.py: needs scikit-image ({error}); install it in a throwaway environment", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        image = np.asarray(getattr(data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]  # the runtime reads RGB; drop the alpha channel of logo
        # Written beside the target and renamed, so an interrupted run leaves no half-written photo.
        handle, temporary = tempfile.mkstemp(suffix=".png", dir=out)
        os.close(handle)
        io.imsave(temporary, image, check_contrast=False)
        os.replace(temporary, out / f"{name}.png")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
