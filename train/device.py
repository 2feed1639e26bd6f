"""Where and how a training run computes: the backend and its accelerators, the dtype
policy, data-parallel distribution, and the library versions recorded with the run."""

from __future__ import annotations

import contextlib
import os
import sys

import keras
import numpy as np

from cifar_edge.runtime.machine import cpu_flags, cpu_model
from cifar_edge.train.settings import TrainError


def precision_policy(mixed_precision: str, device: dict) -> str:
    if mixed_precision == "on" or (mixed_precision == "auto" and device["accelerators"]):
        return "mixed_float16"
    if mixed_precision == "bfloat16":
        # Not chosen by auto: on CPUs without native bfloat16 (AVX512-BF16 or AMX) it is
        # emulated and slower than float32.
        return "mixed_bfloat16"
    return "float32"


#: CPU flags of native bfloat16 arithmetic: x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension.
BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def native_bfloat16(flags: frozenset[str] | None) -> bool | None:
    """Whether a CPU with these flags computes bfloat16 natively; None when its flags are unknown."""
    return None if flags is None else bool(flags & BFLOAT16_FLAGS)


def device_notices(mixed_precision: str, distribute: str, device: dict) -> list[str]:
    """What a setting will not do on this device, said before the run rather than found out after it."""
    notices = []
    if mixed_precision == "on" and not device["accelerators"]:
        notices.append("--mixed-precision on computes in float16, which CPUs emulate, several times slower than float32, and "
                       "no GPU is visible here; use bfloat16 on a CPU with AVX512-BF16 or AMX, or auto")
    if mixed_precision == "bfloat16" and not device["accelerators"] and device.get("native_bfloat16") is False:
        # resnet8-w20 on a 2-vCPU AMD EPYC without AVX-512: 26 images/s against 115 in float32, side by side
        # (2026-12-07, BENCHMARKS.md, "bfloat16 on a CPU that emulates it").
        notices.append(f"--mixed-precision bfloat16: this CPU ({device['cpu']}) has no native bfloat16 (AVX512-BF16, AMX or Arm BF16), "
                       "so it is emulated, several times slower than float32; use off or auto here")
    if distribute == "mirrored" and len(device["accelerators"]) < 2:
        notices.append(f"--distribute mirrored with {len(device['accelerators']) or 'no'} GPU here: one replica, no speed-up")
    return notices


@contextlib.contextmanager
def global_policy(policy: str):
    """Keras' dtype policy is process-wide: set it for the run, then put the old one back."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def distribution_scope(distribute: str):
    if distribute == "none":
        yield
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy().scope():
            yield
    elif backend == "jax":
        # Keras' JAX counterpart of MirroredStrategy: replicate, split each batch.
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        try:
            yield
        finally:
            keras.distribution.set_distribution(None)
    else:
        raise TrainError(f"--distribute mirrored needs the tensorflow or jax backend, not {backend}")


def describe_device() -> dict:
    """The backend, its accelerators and the CPU this process trains on."""
    backend = keras.backend.backend()
    accelerators: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            accelerators.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
    elif backend == "jax":
        import jax

        accelerators = [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    return {"backend": backend, "accelerators": accelerators, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "native_bfloat16": native_bfloat16(cpu_flags())}


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0], "keras": keras.__version__, "backend": keras.backend.backend(), "numpy": np.__version__}
    for package in ("cifar-edge", "tensorflow", "jax"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions
