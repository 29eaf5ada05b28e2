"""A moving average of the trained weights (`train.ema`), the weights every later command uses.

The optimizer moves the raw weights; after each of its steps the average moves a share of the way
towards them. Early on the share is larger (decay min(ema, (1 + k) / (10 + k)) after k updates), so a
short run is not held back by its random initialisation. Validation and the checkpoint's `model`
weights are the average; the raw weights travel beside them only so that `--resume` continues exactly.
"""

from __future__ import annotations

import contextlib

import torch


class WeightAverage:
    """An exponential moving average of a model's parameters."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied ones appear once;
        # a frozen backbone is left out: its weights stay bit for bit what they were
        self.average = [p.detach().clone() for _, p in self.named]

    def rate(self) -> float:
        """The share of the way the next update moves."""
        return 1.0 - min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        rate = self.rate()
        for avg, (_, p) in zip(self.average, self.named):
            avg.lerp_(p.detach(), rate)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block and its own weights again after it."""
        raw = [p.detach().clone() for _, p in self.named]
        try:
            with torch.no_grad():
                for p_avg, (_, p) in zip(self.average, self.named):
                    p.copy_(p_avg)
            yield
        finally:
            with torch.no_grad():
                for p_raw, (_, p) in zip(raw, self.named):
                    p.copy_(p_raw)

    def load(self, averaged_state: dict, updates: int) -> None:
        """Continue from a checkpoint's averaged `model` weights after `updates` optimizer steps."""
        with torch.no_grad():
            for avg, (name, _) in zip(self.average, self.named):
                avg.copy_(averaged_state[name])
        self.updates = updates
