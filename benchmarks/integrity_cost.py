"""What the model integrity check costs: sha256 of each packaged model file, and of a larger file, per load.

    python -m cifar_edge.benchmarks.integrity_cost --repeats 21

Each figure is the median of `--repeats` checks (`verify_model_file`: reading the manifest,
hashing the file and comparing), with the file in the page cache, as it is on every load after
the first; a shared machine is noisy, so the median is reported, with the fastest and slowest.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cifar_edge.runtime.classifier import packaged_models
from cifar_edge.runtime.errors import ArgumentParser, positive_int, run_cli
from cifar_edge.runtime.files import sha256_file, write_json
from cifar_edge.runtime.integrity import verify_model_file


def time_check(path: Path, repeats: int) -> dict:
    verify_model_file(path)  # warm the page cache, as a second load would find it
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        verify_model_file(path)
        seconds.append(time.perf_counter() - start)
    megabytes = path.stat().st_size / 1e6
    median_ms = float(np.median(seconds)) * 1000
    return {"file": path.name, "mb": round(megabytes, 3), "median_ms": round(median_ms, 3),
            "min_ms": round(min(seconds) * 1000, 3), "max_ms": round(max(seconds) * 1000, 3),
            "ms_per_mb": round(median_ms / megabytes, 3)}


def measure(repeats: int, large_mb: int) -> list[dict]:
    rows = []
    for name, folder in packaged_models().items():
        for path in sorted(folder.iterdir()):
            if path.suffix in (".tflite", ".onnx"):
                rows.append({"model": name, **time_check(path, repeats)})
    with tempfile.TemporaryDirectory() as scratch:
        # A larger model than we ship (an fp32 airbench94 is about 8 MB), with its own manifest.
        large = Path(scratch) / "large.tflite"
        large.write_bytes(np.random.default_rng(0).integers(0, 256, large_mb * 1_000_000, dtype=np.uint8).tobytes())
        write_json(Path(scratch) / "manifest.json", {"files": [{"file": large.name, "sha256": sha256_file(large)}]})
        rows.append({"model": f"random {large_mb} MB", **time_check(large, repeats)})
    return rows


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return platform.machine()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    def body():
        parser = ArgumentParser(prog="python -m cifar_edge.benchmarks.integrity_cost", description=__doc__.splitlines()[0])
        parser.add_argument("--repeats", metavar="N", type=positive_int, default=21, help="checks per file (default: 21)")
        parser.add_argument("--large-mb", metavar="MB", type=positive_int, default=64, help="size of the large file (default: 64)")
        parser.add_argument("--json", metavar="FILE", help="also write the figures here")
        args = parser.parse_args(argv)
        rows = measure(args.repeats, args.large_mb)
        print(f"{'model':<14} {'file':<32} {'MB':>7} {'median ms':>10} {'min':>8} {'max':>8} {'ms/MB':>7}")
        for row in rows:
            print(f"{row['model']:<14} {row['file']:<32} {row['mb']:>7.3f} {row['median_ms']:>10.3f} {row['min_ms']:>8.3f} "
                  f"{row['max_ms']:>8.3f} {row['ms_per_mb']:>7.3f}")
        machine = f"{_cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        print(f"{machine}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; median of {args.repeats}")
        if args.json:
            write_json(args.json, {"machine": machine, "repeats": args.repeats, "rows": rows,
                                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})

    return run_cli("integrity_cost", body)


if __name__ == "__main__":
    sys.exit(main())
