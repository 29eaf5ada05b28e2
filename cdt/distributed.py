"""Multi-process training on PyTorch's own engine: torchrun sets the environment, DDP syncs gradients.

    torchrun --nproc_per_node=2 -m cdt train --preset tiny              # one machine, 2 processes
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
             --nproc_per_node=8 -m cdt train                             # several machines

gloo on CPU, nccl on CUDA. Rank 0 alone logs, evaluates and writes; every rank draws its
own slice of each global batch (see `Corpus.batch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td

from cdt.errors import CdtError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Rank and world size as torchrun sets them (defaults: one process)."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup(dist: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if not dist.active:
        return device
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if dist.local_rank >= visible:  # torch would stop with "invalid device ordinal" and a traceback
            raise CdtError(f"process {dist.local_rank} of this machine needs a GPU of its own, and "
                           f"{visible} {'is' if visible == 1 else 'are'} visible: start at most {visible} "
                           f"per machine (--nproc_per_node), or train on the CPU with --device cpu")
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(module: torch.nn.Module, dist: DistInfo, device: torch.device) -> torch.nn.Module:
    if not dist.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def mean(value: float, dist: DistInfo, device: torch.device) -> float:
    """The mean of a per-rank number over all ranks (every rank must call it)."""
    if not dist.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    td.all_reduce(t)
    return float(t) / dist.world_size


def any_rank(flag: bool, dist: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is true on one (a stop request must end all ranks at the same step)."""
    if not dist.active:
        return flag
    t = torch.tensor([int(flag)], device=device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())


def cleanup(dist: DistInfo, wait: bool = False) -> None:
    """Leave the process group. wait: first meet every rank at a barrier (a normal end): a rank
    that tore its group down while rank 0 still ran the final evaluation died of SIGABRT now and
    then, and torchrun then stopped rank 0 too. Not after an error, where a peer may never come."""
    if dist.active and td.is_initialized():
        if wait:
            td.barrier()
        td.destroy_process_group()
