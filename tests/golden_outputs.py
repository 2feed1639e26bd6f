"""Ground truth for the packaged models: what each shipped file answers on `samples/images`.

The LiteRT examples check a model against a committed ground-truth file of expected labels
and scores; this is ours. The scores are the files' raw probabilities (no calibration, no
min-score), so a re-calibration leaves them alone; a change in decoding, cropping, resizing
or quantization handling moves them, and `tests/test_golden.py` fails.

When a packaged model is replaced on purpose, regenerate the file and commit it with the model:

    .venv/bin/python tests/golden_outputs.py        # rewrites tests/golden/packaged_models.csv
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUND_TRUTH = REPO / "tests" / "golden" / "packaged_models.csv"
IMAGES = REPO / "samples" / "images"
MODELS = ("edge", "accurate")
#: The engine that opens each packaged format.
ENGINES = {"tflite-int8": "litert", "onnx-int8": "onnxruntime"}
COLUMNS = ("model", "format", "image", "label", "score")


def compute() -> list[dict]:
    """One row per packaged model, format and sample photo: the top class and its raw probability."""
    from cifar_edge.runtime import Classifier
    from cifar_edge.runtime.sources import read_image_file

    rows = []
    for model in MODELS:
        for format_name, engine in ENGINES.items():
            classifier = Classifier(model, engine=engine, min_score=0.0)
            assert classifier.model.format == format_name, (model, engine, classifier.model.format)
            for path in sorted(IMAGES.iterdir()):
                probabilities = classifier.invoke(classifier.preprocess(read_image_file(path))[None])[0]
                best = int(probabilities.argmax())
                rows.append({"model": model, "format": format_name, "image": path.name, "label": classifier.class_names[best],
                             "score": round(float(probabilities[best]), 4)})
    return rows


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_ground_truth(path: Path = GROUND_TRUTH) -> list[dict]:
    with open(path, newline="") as handle:
        return [{**row, "score": float(row["score"])} for row in csv.DictReader(handle)]


def main() -> int:
    from cifar_edge.runtime.files import write_text

    write_text(GROUND_TRUTH, to_csv(compute()))
    print(f"wrote {GROUND_TRUTH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
