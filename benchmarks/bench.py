"""Accuracy against latency for every model file, on the machine this runs on.

Library half of `cifar-bench`: find the files to measure, measure each (accuracy, batch-1
latency percentiles, batch throughput, load time, peak memory), and write the results as
JSON, CSV, a Markdown table and a plot. Only the runtime's engines and TF-free data loading
are used, so it runs on a Raspberry Pi with the `runtime` extra; the Keras reference row is
added when Keras is installed.
"""

from __future__ import annotations

import os
import platform
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from cifar_edge.benchmarks.discovery import find_candidates
from cifar_edge.benchmarks.outputs import csv_text, markdown_table, pareto_front, plot, read_results, write_outputs
from cifar_edge.benchmarks.records import BENCH_ENGINES, SCHEMA, TABLE_COLUMNS, BenchError, BenchOptions, Candidate, Row
from cifar_edge.benchmarks.worker import RowProcess, WorkerGone, measure, schedule
from cifar_edge.runtime.data import Split
from cifar_edge.runtime.machine import cpu_model
from cifar_edge.runtime.timing import latency_stats

# The library's public names, wherever they are defined: discovery, the worker protocol, outputs.
__all__ = ["BENCH_ENGINES", "SCHEMA", "TABLE_COLUMNS", "BenchError", "BenchOptions", "Candidate", "Row", "count_steps", "csv_text",
           "device_record", "find_candidates", "latency_stats", "markdown_table", "measure", "pareto_front", "plot", "read_results",
           "run_benchmark", "write_outputs"]


def device_record(options: BenchOptions) -> dict:
    """What this machine is, so results from several devices can be told apart."""
    versions = {}
    for package in ("numpy", "opencv-python-headless", "opencv-python", "ai-edge-litert", "tflite-runtime", "onnxruntime",
                    "onnxruntime-gpu", "keras", "tensorflow", "jax"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "name": options.device_name or socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "architecture": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "threads": options.threads,
        "versions": versions,
    }


def count_steps(candidates: list[Candidate], options: BenchOptions) -> int:
    """Progress units of `run_benchmark`: one per row opened and one per timed slice."""
    return len(candidates) * (1 + len(schedule(options)))


def run_benchmark(candidates: list[Candidate], split: Split, options: BenchOptions, data_source: str | None,
                  on_step: Callable[[str], None] | None = None, command: str | None = None) -> dict:
    """Measure every candidate, each in its own process, with their timed slices interleaved.

    A shared machine has slow spells (here, 0.5-1 s in which everything runs 1.4-1.7x
    slower). Timing rows one after another lets a spell land on one row's whole timing;
    cycling through all rows in slices of `slice_time` spreads it over every row, so the
    medians of two runs agree.
    """
    ordered = sorted(candidates, key=lambda c: c.engine == "keras")  # the heavy framework loads last
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cifar-bench-") as scratch:
        split_file = Path(scratch) / "split.npz"
        np.savez(split_file, images=split.images, labels=split.labels)
        workers = [RowProcess(c, split_file, options, Path(scratch), i) for i, c in enumerate(ordered)]
        try:
            for worker in workers:
                try:
                    rows.append(Row(**worker.ask(worker.request, timeout_s=1800)))
                except WorkerGone as gone:
                    candidate = worker.candidate
                    rows.append(Row(candidate.format, candidate.engine, str(candidate.path), "failed", str(gone), candidate.reference,
                                    candidate.model))
                if on_step:
                    on_step(f"{worker.candidate.format} ({worker.candidate.engine}) loaded")
            for step, (batch_size, warmup, min_runs, seconds) in enumerate(schedule(options)):
                order = range(len(workers)) if step % 2 == 0 else reversed(range(len(workers)))
                for index in order:
                    if rows[index].status == "ok":
                        message = {"batch_size": batch_size, "seconds": seconds, "warmup": warmup, "min_runs": min_runs}
                        try:
                            answer = workers[index].ask(message, timeout_s=600 + 10 * seconds)
                        except WorkerGone as gone:
                            answer = {"error": str(gone)}
                        if "error" in answer:
                            rows[index] = replace(rows[index], status="failed", error=answer["error"])
                    if on_step:
                        on_step(f"{ordered[index].format} ({ordered[index].engine}) batch {batch_size}")
            for index, worker in enumerate(workers):
                if rows[index].status == "ok":
                    try:
                        # The child kept every slice's timings: its final row has latency, throughput and peak memory.
                        rows[index] = Row(**worker.ask({"done": True}, timeout_s=60))
                    except WorkerGone as gone:
                        rows[index] = replace(rows[index], status="failed", error=str(gone))
        finally:
            for worker in workers:
                worker.close()
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "device": device_record(options),
        "options": {**asdict(options), "batch_sizes": list(options.batch_sizes), "engines": list(options.engines)},
        "data": {"source": data_source, "split": "test", "images": len(split), "seed": options.seed},
        "rows": [asdict(row) for row in rows],
    }
