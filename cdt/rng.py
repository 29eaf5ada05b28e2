"""Seeded random draws that do not depend on batch composition."""

from __future__ import annotations

import numpy as np
import torch


def seed_for(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (seed, rank, step, row, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class RowGenerators:
    """Seeded draws per row: a row's draws are the same whatever else is in its batch.

    Each call seeds a fresh generator per row from (row seed, call number), so a draw never
    depends on how many numbers earlier calls took; with CPU draws being a prefix of the
    stream, a row padded to a wider batch sees the same values at its own positions.
    """

    def __init__(self, seeds: list[int]):
        self.seeds = [int(s) for s in seeds]
        self.calls = 0

    def uniform(self, row_shape, dtype=torch.float32) -> torch.Tensor:
        """(b, *row_shape) uniforms in [0, 1), row i drawn from its own stream."""
        self.calls += 1
        return torch.stack([torch.rand(row_shape, generator=torch.Generator().manual_seed(seed_for(s, self.calls)),
                                       dtype=dtype) for s in self.seeds])


def fork(generator: torch.Generator | RowGenerators, salt: int = 0) -> torch.Generator | RowGenerators:
    """A generator seeded from `generator`'s current state, which stays as it was: optional draws (a training
    option's) taken from the fork leave every later draw of the parent, and the figures built on them, unchanged.
    Forks of one state with different `salt`s draw apart (two options in one step)."""
    extra = (salt,) if salt else ()
    if isinstance(generator, RowGenerators):
        return RowGenerators([seed_for(s, generator.calls, 104_729, *extra) for s in generator.seeds])
    state = np.frombuffer(generator.get_state().numpy().tobytes(), dtype=np.uint32)
    return torch.Generator().manual_seed(seed_for(*state[::97].tolist(), int(state.sum(dtype=np.uint64)), *extra))
