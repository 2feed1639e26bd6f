"""Shared fixtures: small real data cut from the CIFAR-10 JPEG tarball, in every layout."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

#: The environment pytest started with, before any test imported a library that adds to it.
STARTING_ENVIRONMENT = dict(os.environ)
REPO = Path(__file__).resolve().parents[1]
SHARED_TARBALL = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
TRAIN_PER_CLASS = 30
TEST_PER_CLASS = 10


def cifar_run_exit(argv: list[str]) -> int:
    """`cifar-run`'s exit status for `argv`, run in this process (argparse's errors exit through SystemExit)."""
    from cifar_edge.runtime.cli import main

    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Decoded caches go to a fresh folder, never the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("CIFAR_EDGE_CACHE")
    os.environ["CIFAR_EDGE_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("CIFAR_EDGE_CACHE", None)
    else:
        os.environ["CIFAR_EDGE_CACHE"] = previous


def _find_shared_tarball() -> Path | None:
    for candidate in (os.environ.get("CIFAR10_DATA"), SHARED_TARBALL):
        if candidate and Path(candidate).is_file() and tarfile.is_tarfile(candidate):
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def shared_tarball() -> Path:
    path = _find_shared_tarball()
    if path is None:
        pytest.skip("needs the CIFAR-10 JPEG tarball: set CIFAR10_DATA or place it at ../shared/data/")
    return path


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    """An image-folder tree of 30 train and 10 test JPEGs per class (400 images).

    Real CIFAR-10 images from the JPEG tarball when it is at hand; otherwise synthetic
    ones, so that a clone without the data still runs the suite.
    """
    root = tmp_path_factory.mktemp("tree")
    tarball = _find_shared_tarball()
    if tarball is None:
        return _synthetic_tree(root)
    keep = {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    with tarfile.open(tarball, mode="r|*") as archive:
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[0] in keep and int(Path(parts[2]).stem) < keep[parts[0]]:
                target = root.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    return root


def _synthetic_tree(root: Path) -> Path:
    """Class-dependent colour and stripes plus noise: learnable, like the real thing."""
    import cv2

    from cifar_edge.runtime.labels import CLASS_NAMES

    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for class_id, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                image = np.zeros((32, 32, 3), np.float32)
                image[..., class_id % 3] = 120 + 12 * class_id
                image[:: 2 + class_id % 4] += 60
                image += rng.normal(0, 20, image.shape)
                cv2.imwrite(str(folder / f"{index:04d}.jpg"), np.clip(image, 0, 255).astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def small_dataset(image_tree):
    from cifar_edge.runtime.data import load_cifar10

    return load_cifar10(image_tree)


def _batch_pickle(images: np.ndarray, labels: np.ndarray) -> bytes:
    # The official layout: rows of planar R, G, B; bytes keys as Python 2 wrote them.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"batch_label": b"test", b"labels": [int(x) for x in labels], b"data": rows}, protocol=2)


def write_official_tarball(path: Path, dataset, batches: dict[str, bytes] | None = None) -> Path:
    """Write `dataset` as an official-format cifar-10-python.tar.gz; `batches` overrides files."""
    parts = np.array_split(np.arange(len(dataset.train)), 5)
    files = {f"data_batch_{i + 1}": _batch_pickle(dataset.train.images[p], dataset.train.labels[p]) for i, p in enumerate(parts)}
    files["test_batch"] = _batch_pickle(dataset.test.images, dataset.test.labels)
    files["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in dataset.class_names]}, protocol=2)
    files.update(batches or {})
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def official_tarball(small_dataset, tmp_path_factory) -> Path:
    return write_official_tarball(tmp_path_factory.mktemp("official") / "cifar-10-python.tar.gz", small_dataset)


@pytest.fixture(scope="session")
def tiny_model(small_dataset, tmp_path_factory) -> Path:
    """A resnet8 `.keras` file trained for two epochs on the 300 small images (seconds)."""
    pytest.importorskip("keras")
    from cifar_edge.train.settings import TrainSettings
    from cifar_edge.train.trainer import train

    settings = TrainSettings.for_model("resnet8", epochs=2, batch_size=32, learning_rate=0.05)
    result = train(settings, small_dataset, tmp_path_factory.mktemp("tiny-model"), verbose=0)
    return result.files["model.keras"]


@pytest.fixture(scope="session")
def tiny_export(tiny_model, small_dataset, tmp_path_factory) -> tuple[Path, dict]:
    """Every format of `tiny_model`, exported once for the export, runtime and benchmark tests."""
    pytest.importorskip("tensorflow")
    from cifar_edge.export.exporter import ExportOptions, export_model
    from cifar_edge.runtime.formats import FORMATS

    out = tmp_path_factory.mktemp("export")
    options = ExportOptions(calibration_images=100, validate_images=100, max_accuracy_drop=100.0)
    return out, export_model(tiny_model, out, list(FORMATS), small_dataset, options)


def export_file(tiny_export, format_name: str) -> Path:
    out, manifest = tiny_export
    return out / next(row["file"] for row in manifest["files"] if row["format"] == format_name)
