"""What machine this is, for the records of training runs and benchmarks."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's name: x86's "model name", else a Raspberry Pi's board ("Model") and the like."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    # x86 says "model name"; a Raspberry Pi says "Model" (the board) and the cores' names are bare.
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The feature flags of the first CPU in /proc/cpuinfo (or `cpuinfo`): x86's "flags", Arm's "Features";
    None where the system lists none (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, e.g. under taskset or a container)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
