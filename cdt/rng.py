"""Seeded random draws that do not depend on batch composition."""

from __future__ import annotations

import numpy as np
import torch


def seed_for(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (seed, rank, step, row, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class RowGenerators:
    """One seeded torch.Generator per row: a row's draws are the same whatever else is in its batch."""

    def __init__(self, seeds: list[int]):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def uniform(self, row_shape, dtype=torch.float32) -> torch.Tensor:
        """(b, *row_shape) uniforms in [0, 1), row i drawn from generator i."""
        return torch.stack([torch.rand(row_shape, generator=g, dtype=dtype) for g in self.gens])
