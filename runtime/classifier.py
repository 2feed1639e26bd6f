"""`Classifier`: any image in, labelled predictions out, on LiteRT, ONNX Runtime or Keras.

`classify()` is `preprocess` -> `invoke` -> `postprocess`, and each step is public so the
CLI can time them separately. Images are RGB; frames from OpenCV are converted where they
are read (see `sources`), never here, so nothing is swapped twice.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_edge.runtime.calibration import Calibration
from cifar_edge.runtime.engines import DEVICES, ENGINES, Engine, EngineError, open_engine
from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.formats import FORMATS, engine_for
from cifar_edge.runtime.integrity import verify_model_file
from cifar_edge.runtime.labels import CLASS_NAMES, IMAGE_SIZE, INPUT_CONTRACT, NUM_CLASSES, OUTPUT_CONTRACT
from cifar_edge.runtime.manifest import MANIFEST, file_rows, read_manifest
from cifar_edge.runtime.preprocess import FITS, as_rgb_uint8, fit_square, zoom_views
from cifar_edge.runtime.zoom import ONE_VIEW, Zoom

#: Packaged models live beside this file, one folder each with its export manifest.
PACKAGED_DIR = Path(__file__).parent / "models"
#: What `Classifier()` and `cifar-run` use with no model named: the best model trained so far.
DEFAULT_MODEL = "edge"
#: The answer's label when the calibrated top score is below the minimum.
UNKNOWN = "unknown"


class ImageError(CifarEdgeError):
    """An image array the classifier cannot take (wrong shape or pixel type)."""


@dataclass(frozen=True)
class Prediction:
    """One class and its probability, or `unknown` (class_id None) with the best class's probability."""

    label: str
    class_id: int | None
    score: float


@dataclass(frozen=True)
class ClassifierOptions:
    """How a `Classifier` runs; checked when it is built."""

    engine: str = "auto"
    """`auto` (LiteRT for .tflite, ONNX Runtime for .onnx, Keras for .keras), or one of those by name."""
    device: str = "cpu"
    """`cpu`, or `gpu` through ONNX Runtime's CUDA/TensorRT providers or a Keras GPU backend."""
    threads: int | None = None
    """Engine threads; None lets the engine choose (usually one per core)."""
    fit: str = "crop"
    """How a non-square image becomes square: centred `crop`, black `pad`, or `stretch`."""
    zoom: Zoom | str = "auto"
    """Which centred crops of each image are classified (in one batch), as fractions of the square's
    side, and how their answers become one, for subjects that fill only part of a frame: a `Zoom`,
    or as `cifar-run --zoom` spells it (`1,0.75` keeps the most confident calibrated view;
    `1:0.75,0.75:0.25` answers with the views' weighted mean, which leans on the whole view where
    the subject fills the frame: BENCHMARKS.md, "Zoom: the weighted mean of two views"); a sequence
    of fractions is read as the former. `1` classifies the whole square once. `auto`: the setting
    the model's manifest row (or its ONNX metadata) carries, with its threshold, else `1`.
    Stored as `auto` or a `Zoom`."""
    check_integrity: bool = True
    """Hash the model file and refuse it (`IntegrityError`) when it differs from the sha256 recorded in the
    manifest beside it, as a damaged or half-replaced file does; False for a file changed on purpose."""
    min_score: float | str = "auto"
    """`Classifier.answer()` (and so `cifar-run`) says `unknown` when the calibrated top score is below
    this: `auto` takes the threshold in the model's calibration (0 when it has none), a number from
    0 to 1 sets it, 0 turns it off. `classify()` itself always returns the top classes."""

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise CifarEdgeError(f"engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        if self.device not in DEVICES:
            raise CifarEdgeError(f"device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.threads is not None and self.threads < 1:
            raise CifarEdgeError(f"threads {self.threads}: must be at least 1")
        if self.fit not in FITS:
            raise CifarEdgeError(f"fit {self.fit!r}: choose one of {', '.join(FITS)}")
        if self.zoom != "auto":
            object.__setattr__(self, "zoom", _zoom_setting(self.zoom))
        if self.min_score != "auto" and not (isinstance(self.min_score, (int, float)) and 0 <= self.min_score <= 1):
            raise CifarEdgeError(f"min_score {self.min_score!r}: auto, or a number from 0 to 1")


def _zoom_setting(zoom: object) -> Zoom:
    """`ClassifierOptions.zoom`, other than `auto`, as a `Zoom` (CifarEdgeError when it is none)."""
    if isinstance(zoom, Zoom):
        return zoom
    try:
        if isinstance(zoom, str):
            return Zoom.parse(zoom)
        if isinstance(zoom, (tuple, list)):
            return Zoom(tuple(zoom))  # Zoom checks each fraction
    except ValueError as error:
        raise CifarEdgeError(f"zoom: {error}") from None
    raise CifarEdgeError(f"zoom {zoom!r}: auto, a Zoom, fractions, or as --zoom spells it (e.g. 1:0.75,0.75:0.25)")


@dataclass(frozen=True)
class ResolvedModel:
    """A model file and what travels with it."""

    path: Path
    name: str
    """The packaged name, or the file's stem."""
    format: str | None
    """Its row in the format table when the manifest says (`tflite-int8`, ...)."""
    class_names: tuple[str, ...]
    packaged: bool
    calibration: Calibration | None = None
    """From the manifest row; None for files exported before calibration, or without held-out images."""
    sha256: str | None = None
    """The digest the manifest row records, checked before the file is opened; None when unrecorded."""
    zoom: Zoom | None = None
    """The zoom setting the manifest row carries (`zoom="auto"` answers with it); None: the whole square once."""


def packaged_models() -> dict[str, Path]:
    """Name -> folder for every model shipped inside the package."""
    if not PACKAGED_DIR.is_dir():
        return {}
    return {folder.name: folder for folder in sorted(PACKAGED_DIR.iterdir()) if (folder / MANIFEST).is_file()}


def resolve_model(model: str | os.PathLike | None = None, engine: str = "auto", device: str = "cpu") -> ResolvedModel:
    """A model path, or a packaged model's name, as the file to open and its class names."""
    spec = str(model) if model is not None else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.is_file():
        return _resolve_file(path)
    if (path / MANIFEST).is_file():
        # An export folder: pick its file the way a packaged model's is picked.
        return _resolve_folder(path.name, path, engine, device, packaged=False)
    packaged = packaged_models()
    if spec in packaged:
        return _resolve_folder(spec, packaged[spec], engine, device, packaged=True)
    if path.suffix or os.sep in spec or path.exists():
        if path.is_dir():
            raise EngineError(f"{spec}: is a folder without a {MANIFEST}, not a model file or export folder")
        raise EngineError(f"{spec}: no such model file" if not path.exists() else f"{spec}: not a model file")
    names = ", ".join(packaged) or "none installed"
    raise EngineError(f"{spec}: no such model file or packaged model (packaged: {names})")


def _checked_names(names, where: str) -> tuple[str, ...]:
    if not isinstance(names, list) or len(names) != NUM_CLASSES or not all(isinstance(n, str) for n in names):
        raise EngineError(f"{where}: class_names must be a list of {NUM_CLASSES} strings")
    return tuple(names)


def _resolve_file(path: Path) -> ResolvedModel:
    manifest = read_manifest(path.parent)
    row = next((r for r in file_rows(manifest) if r["file"] == path.name), None)
    names = _checked_names(manifest["class_names"], str(path.parent / MANIFEST)) if row and "class_names" in manifest else None
    return ResolvedModel(path, path.stem, row.get("format") if row else None, names or (), packaged=False,
                         calibration=_checked_calibration(row, path.parent / MANIFEST),
                         sha256=row.get("sha256") if row else None, zoom=_checked_zoom(row, path.parent / MANIFEST))


def _checked_calibration(row: dict | None, where) -> Calibration | None:
    if not row or row.get("calibration") is None:
        return None
    try:
        return Calibration.from_dict(row["calibration"] if isinstance(row["calibration"], dict) else {})
    except ValueError as error:
        raise EngineError(f"{where}: {row.get('file')}: {error}") from None


def _checked_zoom(row: dict | None, where) -> Zoom | None:
    if not row or row.get("zoom") is None:
        return None
    try:
        return Zoom.from_dict(row["zoom"])
    except ValueError as error:
        raise EngineError(f"{where}: {row.get('file')}: {error}") from None


def _litert_installed() -> bool:
    return any(importlib.util.find_spec(name) for name in ("ai_edge_litert", "tflite_runtime"))


def _resolve_folder(name: str, folder: Path, engine: str, device: str, packaged: bool) -> ResolvedModel:
    manifest = read_manifest(folder) or {}
    listed = file_rows(manifest)
    rows = [r for r in listed if (folder / r["file"]).is_file()]
    if engine == "auto":
        # The GPU is reached through ONNX Runtime; on the CPU LiteRT is the smaller, faster install.
        order = ("onnxruntime", "litert") if device == "gpu" or not _litert_installed() else ("litert", "onnxruntime")
    else:
        order = (engine,)
    precision_rank = {f.name: i for i, f in enumerate(sorted(FORMATS, key=lambda f: f.precision != "int8"))}
    for wanted in order:
        candidates = [r for r in rows if engine_for(r["file"]) == wanted]
        if candidates:
            row = min(candidates, key=lambda r: precision_rank.get(r.get("format"), len(precision_rank)))
            names = _checked_names(manifest.get("class_names"), str(folder / MANIFEST))
            return ResolvedModel(folder / row["file"], name, row.get("format"), names, packaged,
                                 _checked_calibration(row, folder / MANIFEST), row.get("sha256"), _checked_zoom(row, folder / MANIFEST))
    missing = [r["file"] for r in listed if r not in rows]
    gone = f" (listed but missing: {', '.join(missing)})" if missing else ""
    raise EngineError(f"{folder}: no model file for engine {' or '.join(order)} in its manifest{gone}")


class Classifier:
    """Classify images with an exported model (or a `.keras` file when Keras is installed).

    >>> Classifier().classify(rgb_image, top_k=3)  # the packaged default model
    [Prediction(label='cat', class_id=3, score=0.81), ...]
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        engine: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
        fit: str = "crop",
        min_score: float | str = "auto",
        zoom: Zoom | str | Sequence[float] = "auto",
        check_integrity: bool = True,
    ):
        self.options = ClassifierOptions(engine=engine, device=device, threads=threads, fit=fit, min_score=min_score,
                                         zoom=zoom, check_integrity=check_integrity)
        self.model = resolve_model(model, engine, device)
        if check_integrity:
            verify_model_file(self.model.path, self.model.sha256)  # before any byte of it is parsed
        self.engine: Engine = open_engine(self.model.path, engine, threads, device)
        self.class_names = self.model.class_names or self._names_from_engine()
        # The manifest row's entries, else those the file carries itself (ONNX metadata_props).
        self.calibration: Calibration | None = self.model.calibration or self._from_metadata("calibration", Calibration.from_dict)
        carried: Zoom | None = self.model.zoom or self._from_metadata("zoom", Zoom.from_dict)
        self.zoom: Zoom = (carried or ONE_VIEW) if self.options.zoom == "auto" else self.options.zoom
        """The zoom setting in use: the model's own under `auto`, else the one given."""
        # Built once, not per frame: the weighted mean's weights, scaled to sum to 1.
        self._view_weights = None if self.zoom.weights is None else np.asarray(self.zoom.weights, np.float32) / np.float32(sum(self.zoom.weights))
        if min_score == "auto":
            min_score = self.calibration.min_score if self.calibration else 0.0
            if self.calibration and carried and carried.min_score is not None and carried.same_views(self.zoom):
                min_score = carried.min_score  # fitted for these views, not for one
        self.min_score = float(min_score)
        """The threshold in use: `answer()` says `unknown` below it."""

    def _from_metadata(self, key: str, parse):
        """`parse` of the JSON entry `key` of the file's own metadata; None when it has none."""
        text = getattr(self.engine, "metadata", {}).get(key)
        if text is None:
            return None
        try:
            return parse(json.loads(text))
        except (json.JSONDecodeError, ValueError, AttributeError, TypeError) as error:
            raise EngineError(f"{self.model.path}: {key} metadata is unreadable ({error})") from None

    def _names_from_engine(self) -> tuple[str, ...]:
        metadata = getattr(self.engine, "metadata", {})
        if "class_names" in metadata:
            try:
                return _checked_names(json.loads(metadata["class_names"]), f"{self.model.path} metadata")
            except json.JSONDecodeError:
                raise EngineError(f"{self.model.path}: class_names metadata is not JSON") from None
        return CLASS_NAMES

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """An RGB image of any size, gray/RGB/RGBA, 8 or 16 bit, as the 32x32x3 uint8 the model takes."""
        try:
            return fit_square(as_rgb_uint8(image), IMAGE_SIZE, self.options.fit)
        except ValueError as error:
            raise ImageError(f"image: {error}") from None

    def preprocess_views(self, image: np.ndarray) -> np.ndarray:
        """The model inputs of one image, one per zoom fraction: uint8 (views, 32, 32, 3)."""
        try:
            return zoom_views(as_rgb_uint8(image), IMAGE_SIZE, self.options.fit, self.zoom.fractions)
        except ValueError as error:
            raise ImageError(f"image: {error}") from None

    def postprocess_views(self, probabilities: np.ndarray, top_k: int = 1) -> list[Prediction]:
        """`postprocess` of the view (zoom) whose calibrated top score is highest, or of the views'
        weighted mean (a `zoom` with weights)."""
        if len(probabilities) == 1:
            return self.postprocess(probabilities[0], top_k)
        return self.postprocess(self._combine_views(probabilities), top_k, calibrated=True)

    def _combine_views(self, probabilities: np.ndarray) -> np.ndarray:
        """(views, 10) raw probabilities of one image -> its (10,) calibrated answer under the zoom setting."""
        calibrated = self.calibration.apply(probabilities) if self.calibration is not None else probabilities
        if self._view_weights is not None:
            return self._view_weights @ calibrated
        return calibrated[int(calibrated.max(axis=1).argmax())]

    def probabilities(self, images) -> np.ndarray:
        """(N, 10): the calibrated probabilities `classify` ranks, for a list of images or a uint8 (N, H, W, C) array."""
        if len(images) == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        views = len(self.zoom.fractions)
        rows = self.invoke(np.concatenate([self.preprocess_views(image) for image in images])).reshape(len(images), views, -1)
        if views == 1:
            return self.calibration.apply(rows[:, 0]) if self.calibration is not None else rows[:, 0]
        return np.stack([self._combine_views(row) for row in rows])

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, 32, 32, 3) -> float32 (N, 10) probabilities; quantization is the engine's business."""
        return self.engine.predict(batch)

    def postprocess(self, probabilities: np.ndarray, top_k: int = 1, calibrated: bool = False) -> list[Prediction]:
        """The `top_k` most probable classes of one image, best first, with calibrated scores
        (`calibrated`: the probabilities already are)."""
        if self.calibration is not None and not calibrated:
            probabilities = self.calibration.apply(probabilities)
        if top_k == 1:  # the per-frame case, kept to one argmax
            best = int(probabilities.argmax())
            return [Prediction(self.class_names[best], best, probabilities.item(best))]
        top_k = max(1, min(int(top_k), len(probabilities)))
        return [Prediction(self.class_names[i], int(i), probabilities.item(i)) for i in np.argsort(probabilities)[::-1][:top_k]]

    def answer(self, predictions: list[Prediction]) -> Prediction:
        """The best class, or `unknown` (with the best class's score) when it scores below `min_score`."""
        best = predictions[0]
        return best if best.score >= self.min_score else Prediction(UNKNOWN, None, best.score)

    def classify(self, image: np.ndarray, top_k: int = 1) -> list[Prediction]:
        return self.postprocess_views(self.invoke(self.preprocess_views(image)), top_k)

    def classify_batch(self, images, top_k: int = 1) -> list[list[Prediction]]:
        """A list of images (any sizes), or a uint8 (N, H, W, C) array."""
        return [self.postprocess(row, top_k, calibrated=True) for row in self.probabilities(images)]

    def info(self) -> dict:
        """What `cifar-run --info` prints: the resolved file, its engine and contract."""
        return {
            "model": self.model.name,
            "path": str(self.model.path.resolve()),
            "packaged": self.model.packaged,
            "format": self.model.format,
            "engine": self.engine.name,
            "engine_version": self.engine.version,
            "device": self.options.device,
            "providers": getattr(self.engine, "providers", None),
            "size_bytes": self.model.path.stat().st_size,
            "class_names": list(self.class_names),
            "input": INPUT_CONTRACT,
            "output": OUTPUT_CONTRACT,
            "model_input_dtype": self.engine.input_dtype.name,
            "calibration": self.calibration.as_dict() if self.calibration else None,
            "min_score": self.min_score,
            "zoom": self.zoom.text,
        }
