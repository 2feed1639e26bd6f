"""Timing a call: repeated runs and robust statistics of them, for `cifar-bench` and `cifar-tune`.

In the runtime because a device measures with it and the benchmarks must run with the
runtime extra alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

#: Slow outliers (a context switch, a page fault) are left out of mean and std beyond this many robust sigmas.
OUTLIER_SIGMAS = 5.0
MIN_RUNS = 10


def latency_stats(seconds: list[float] | np.ndarray) -> dict:
    """Percentiles of every run, and mean and std without the slow outliers.

    Percentiles are robust by themselves; the mean is not, so runs slower than the median
    by more than OUTLIER_SIGMAS robust standard deviations (1.4826 x MAD) are set aside
    for it and counted.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    if ms.size == 0:
        raise ValueError("no timings")
    median = float(np.median(ms))
    robust_sigma = 1.4826 * float(np.median(np.abs(ms - median)))
    kept = ms[ms <= median + OUTLIER_SIGMAS * robust_sigma] if robust_sigma > 0 else ms
    return {
        "runs": int(ms.size),
        "p50": round(median, 4),
        "p90": round(float(np.percentile(ms, 90)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4),
        "min": round(float(ms.min()), 4),
        "mean": round(float(kept.mean()), 4),
        "std": round(float(kept.std()), 4),
        "outliers": int(ms.size - kept.size),
    }


def time_runs(function: Callable[[], object], warmup: int, min_time: float, min_runs: int = MIN_RUNS) -> list[float]:
    """Seconds of each timed call of `function`, after `warmup` untimed ones: at least
    `min_runs` calls and at least `min_time` seconds."""
    for _ in range(warmup):
        function()
    times: list[float] = []
    deadline = time.perf_counter() + min_time
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times
