"""Where tensors run: device choice and the matching precision (fp32 on CPU, bf16 autocast on CUDA)."""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import nullcontext

import torch

from cdt.errors import CdtError
from cdt.settings import check_device


def pick_device(name: str) -> torch.device:
    """The torch device `--device NAME` means (auto: CUDA when there is one); an unknown name is a usage error."""
    check_device(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CdtError(f"--device {name} was asked for, but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a wall clock read after it is true."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU, where bf16 matmuls are very slow."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "LD_PRELOAD")


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in the process for the next pass (Linux with glibc).

    A forward pass on CPU allocates and frees activations of several MB each. By default glibc
    serves some of them with fresh mmap pages, or hands freed memory back to the kernel, so the next
    pass page-faults its buffers in again. Serving blocks up to 32 MiB from the heap and keeping
    up to 256 MiB of it free makes a batch-64 sampling step about a quarter faster
    (benchmarks/README.md). Only the process's entry point calls this: importing cdt changes
    nothing. Skipped when the user chose an allocator (LD_PRELOAD, glibc's MALLOC_* variables)
    or set CDT_MALLOC=default. Returns whether it changed anything.
    """
    if not sys.platform.startswith("linux") or os.environ.get("CDT_MALLOC") == "default":
        return False
    if any(os.environ.get(name) for name in _MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))
