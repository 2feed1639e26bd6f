"""What an export run is asked for (`ExportOptions`, checked when made) and what it gives per format."""

from __future__ import annotations

from dataclasses import dataclass, field

from cifar_edge.runtime.errors import CifarEdgeError
from cifar_edge.runtime.tta import TTA_MODES

#: ONNX int8 calibration methods; `auto` tries the others and keeps the most accurate. The CLI's choices.
CALIBRATION_METHODS = ("auto", "minmax", "entropy", "percentile")


class ExportError(CifarEdgeError):
    pass


@dataclass
class FormatResult:
    """What happened to one format."""

    format: str
    status: str = "export failed"
    file: str | None = None
    precision: str = ""
    engine: str = ""
    size_bytes: int | None = None
    sha256: str | None = None
    export_seconds: float | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None
    agreement: float | None = None
    max_probability_difference: float | None = None
    calibration: dict | None = None
    """`cifar_edge.runtime.calibration.Calibration`, fitted on held-out training images; None without them."""
    ece: float | None = None
    """Expected calibration error (15 bins) of the file's own scores on the validation images."""
    ece_calibrated: float | None = None
    """The same after the calibration's temperature."""
    details: dict = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ExportOptions:
    """Choices for one export run."""

    calibration_images: int = 500
    """Training images used to calibrate int8 formats (class-balanced, fixed seed)."""
    calibration_method: str = "auto"
    """ONNX int8 calibration: `auto` tries every method and keeps the most accurate."""
    validate_images: int = 2000
    """Test images each exported file is checked on."""
    tta: str = "none"
    """Test-time augmentation built into every exported graph: none, flip or 6 views
    (`cifar_edge.runtime.tta`); the Keras reference is checked with the same views."""
    max_accuracy_drop: float = 1.0
    """Percentage points an exported file may lose against Keras before it fails."""
    seed: int = 0
    """Seed of the class-balanced calibration and validation images."""

    def __post_init__(self):
        """Bad choices fail here, before any conversion, not as an "export failed" row per format."""
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ExportError(f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, not {self.calibration_method!r}")
        if self.tta not in TTA_MODES:
            raise ExportError(f"tta must be one of {', '.join(TTA_MODES)}, not {self.tta!r}")
        for name in ("calibration_images", "validate_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ExportError(f"{name} must be a whole number of at least 1, not {value!r}")
        if not isinstance(self.max_accuracy_drop, (int, float)) or self.max_accuracy_drop < 0:
            raise ExportError(f"max_accuracy_drop must be 0 or more percentage points, not {self.max_accuracy_drop!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ExportError(f"seed must be a whole number of 0 or more, not {self.seed!r}")
