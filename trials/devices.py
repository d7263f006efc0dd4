"""Which device a trial trains on, decided without importing torch.

`cuda_device_count` asks the CUDA driver library directly (milliseconds): the command line checks
`--device cuda` before it starts anything, and importing torch to ask would cost 2 s.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["DEVICES", "cuda_device_count", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")  # what --device accepts

_DRIVER = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


def cuda_device_count() -> int:
    """GPUs the CUDA driver shows this process (it honours CUDA_VISIBLE_DEVICES); 0 without a driver."""
    try:
        driver = ctypes.CDLL(_DRIVER)
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def resolve_device(device: str, gpus: float) -> str:
    """`device` ("auto", "cpu" or "cuda") made concrete for a cluster with `gpus` GPUs: auto is cuda when
    there is one. Raises ValueError for cuda without GPUs."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose {', '.join(DEVICES)}")
    if device == "cuda" and gpus <= 0:
        raise ValueError("--device cuda: the Ray cluster has no GPU; use --device cpu (or auto)")
    return "cuda" if device == "cuda" or (device == "auto" and gpus > 0) else "cpu"
