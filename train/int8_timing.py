"""A model's int8 TFLite latency on this machine, for `cifar-tune`'s budget and `candidates`.

The model is converted with the exporter (train/ may use export/; nothing points back) and
timed with the runtime's LiteRT engine and timing helpers, as `cifar-bench` times files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from cifar_edge.runtime.data import Split
from cifar_edge.runtime.engines import open_engine
from cifar_edge.runtime.formats import get_format
from cifar_edge.runtime.timing import latency_stats, time_runs
from cifar_edge.train.search_space import TuneError


def int8_latency(calibration: Split, threads: int | None, seconds: float = 1.0) -> Callable[[object], float]:
    """A function giving a model's int8 TFLite p50 latency at batch 1 here, in ms."""
    from cifar_edge.export.exporter import convert  # TensorFlow: only once a model is timed

    def measure(model) -> float:
        with tempfile.TemporaryDirectory(prefix="cifar-tune-") as scratch:
            target = Path(scratch) / "candidate.tflite"
            # convert_tflite already filters the converter's per-file C++ notices, and lets real errors through.
            result = convert(model, get_format("tflite-int8"), target, calibration)
            if result.status != "passed":
                raise TuneError(f"could not convert a candidate to tflite-int8 to time it: {result.error}")
            engine = open_engine(target, "litert", threads)
            image = calibration.images[:1]
            return latency_stats(time_runs(lambda: engine.predict(image), warmup=20, min_time=seconds))["p50"]

    return measure
