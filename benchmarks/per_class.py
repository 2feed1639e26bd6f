"""Per-class accuracy, the most confused pairs and the confusion matrix of one model file.

    python -m cifar_edge.benchmarks.per_class edge --data ../shared/data/cifar10-jpeg.tar.gz \
        --image docs/img/edge-confusion.png

It takes what `cifar-run --model` takes (a file, an export folder or a packaged name) and
runs it through the runtime's engine on the whole test split, so the figures belong to the
file that ships, not to the Keras model it came from. Prints Markdown for MODEL_CARD.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_edge.runtime.classifier import resolve_model
from cifar_edge.runtime.data import Split, load_cifar10, resolve_source
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.errors import ArgumentParser, positive_int, run_cli
from cifar_edge.runtime.labels import CLASS_NAMES
from cifar_edge.runtime.metrics import confusion_matrix
from cifar_edge.runtime.plots import plot_confusion_matrix


@dataclass(frozen=True)
class PerClass:
    model: str
    file: Path
    images: int
    accuracy: float
    per_class: dict[str, float]
    confusion: np.ndarray
    """Rows: true class; columns: predicted class."""
    class_names: tuple[str, ...]

    def confused_pairs(self, count: int = 5) -> list[tuple[str, str, int]]:
        """The largest off-diagonal cells: (true, predicted, images)."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(off, axis=None)[::-1][:count]
        return [(self.class_names[i], self.class_names[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))]


def per_class(model: str, split: Split, threads: int | None = None) -> PerClass:
    resolved = resolve_model(model)
    engine = open_engine(resolved.path, "auto", threads)
    predictions = engine.predict(split.images, batch_size=256).argmax(1)
    matrix = confusion_matrix(split.labels, predictions)
    per = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    # A bare file has no manifest; CIFAR-10's own order is what every model here returns.
    names = resolved.class_names or CLASS_NAMES
    return PerClass(resolved.name, resolved.path, len(split), float(np.mean(predictions == split.labels)),
                    dict(zip(names, per.tolist(), strict=True)), matrix, tuple(names))


def markdown(result: PerClass) -> str:
    lines = [f"`{result.file.name}` on {result.images:,} test images: {100 * result.accuracy:.2f}%", "",
             "| class | accuracy |", "|---|---:|"]
    lines += [f"| {name} | {100 * value:.1f}% |" for name, value in result.per_class.items()]
    lines += ["", "Most confused (true → predicted: images):", ""]
    lines += [f"- {true} → {predicted}: {count}" for true, predicted, count in result.confused_pairs()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    def body():
        parser = ArgumentParser(prog="python -m cifar_edge.benchmarks.per_class", description=__doc__.splitlines()[0])
        parser.add_argument("model", help="model file, export folder or packaged name")
        parser.add_argument("--data", help="CIFAR-10 source (default: $CIFAR10_DATA, else download)")
        parser.add_argument("--image", type=Path, help="write the confusion matrix here (PNG)")
        parser.add_argument("--threads", type=positive_int)
        args = parser.parse_args(argv)
        split = load_cifar10(resolve_source(args.data)).test
        result = per_class(args.model, split, args.threads)
        print(markdown(result), end="")
        if args.image:
            plot_confusion_matrix(result.confusion, result.class_names, args.image,
                                  title=f"{result.model} ({result.file.name}): {100 * result.accuracy:.2f}%")
            print(f"wrote {args.image}")

    return run_cli("per_class", body)


if __name__ == "__main__":
    sys.exit(main())
