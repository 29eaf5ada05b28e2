"""Masking schedules and corruption for absorbing-state (masked) diffusion.

alpha(t) is the probability that a token is still clean at time t in [0, 1]; a token
is masked with probability 1 - alpha(t). The continuous-time NELBO (MDLM, Sahoo et
al. 2024, https://arxiv.org/abs/2406.07524) weights the cross-entropy on masked
tokens by w(t) = -alpha'(t) / (1 - alpha(t)).
"""

from __future__ import annotations

import math

import torch

from cdt.rng import RowGenerators

from cdt.errors import UsageError
from cdt.vocab import MASK_ID

EPS = 1e-3  # keeps alpha(1) > 0 and w(t) finite


class Schedule:
    name = ""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.alpha(t)


class LogLinear(Schedule):
    """alpha = 1 - (1 - eps) t: masking probability linear in t, total noise log-linear (MDLM default)."""

    name = "loglinear"

    def alpha(self, t):
        return 1.0 - (1.0 - EPS) * t

    def weight(self, t):
        return 1.0 / t


class Linear(Schedule):
    """alpha = exp(-sigma(t)) with total noise sigma(t) = -log(eps) * t linear in t."""

    name = "linear"
    sigma_max = -math.log(EPS)

    def alpha(self, t):
        return torch.exp(-self.sigma_max * t)

    def weight(self, t):
        return self.sigma_max / torch.expm1(self.sigma_max * t)


class Cosine(Schedule):
    """alpha = eps + (1 - eps) cos(pi t / 2): slow masking early, fast late."""

    name = "cosine"

    def alpha(self, t):
        return EPS + (1.0 - EPS) * torch.cos(math.pi / 2 * t)

    def weight(self, t):
        s = math.pi / 2 * t
        return (1.0 - EPS) * (math.pi / 2) * torch.sin(s) / ((1.0 - EPS) * (1.0 - torch.cos(s)))


SCHEDULES = {s.name: s for s in (LogLinear, Linear, Cosine)}


def get_schedule(name: str) -> Schedule:
    if name not in SCHEDULES:
        raise UsageError(f"unknown noise schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[name]()


def sample_t(b: int, generator: torch.Generator, antithetic: bool = True, t_min: float = EPS) -> torch.Tensor:
    """(b,) times in [t_min, 1). Antithetic: one uniform offset, evenly spread over the batch (lower variance)."""
    if antithetic:
        u = (torch.rand(1, generator=generator) + torch.arange(b) / b) % 1.0
    else:
        u = torch.rand(b, generator=generator)
    return t_min + (1.0 - t_min) * u


def corrupt(clean: torch.Tensor, maskable: torch.Tensor, t: torch.Tensor, schedule: Schedule,
            generator: torch.Generator | RowGenerators) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask each maskable token with probability 1 - alpha(t). Returns (noisy, masked), both (b, n).

    With RowGenerators each row draws from its own stream (independent of its batch)."""
    p = schedule.mask_prob(t).to(clean.device)[:, None]  # (b, 1)
    if isinstance(generator, RowGenerators):
        u = generator.uniform(clean.shape[1:]).to(clean.device)
    else:
        u = torch.rand(clean.shape, generator=generator).to(clean.device)
    masked = (u < p) & maskable
    return clean.masked_fill(masked, MASK_ID), masked


def span_region(maskable: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(b, n) bool: in row i, the maskable positions ranked starts[i] .. starts[i] + counts[i] - 1 among that
    row's maskable ones: one contiguous run of them (`--mask span`'s region, and training's span rollouts)."""
    rank = maskable.long().cumsum(1) - 1
    starts, counts = starts.to(maskable.device)[:, None], counts.to(maskable.device)[:, None]
    return maskable & (rank >= starts) & (rank < starts + counts)


def span_like(noisy: torch.Tensor, maskable: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(b, n) bool: as many positions as each row of `noisy` has masked, now one contiguous run of its
    maskable positions, starting at a uniform place (`u` (b,) uniforms)."""
    counts = (noisy == MASK_ID).sum(1)
    room = maskable.sum(1) - counts + 1
    starts = torch.minimum((u.to(room.device) * room).long(), room - 1)
    return span_region(maskable, starts, counts)
