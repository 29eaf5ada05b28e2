"""Where tensors run: device choice and the matching precision (fp32 on CPU, bf16 autocast on CUDA)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from cdt.errors import CdtError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CdtError("--device cuda was asked for, but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU, where bf16 matmuls are very slow."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
