"""The held-out infill loop that `cdt eval` and `cdt calibrate` share: batches of held-out rows,
each row generated from its own seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from cdt.model import DiffusionLM
from cdt.sampling.heldout import HeldOut
from cdt.sampling.loop import Generation, generate
from cdt.settings import SampleConfig


@dataclass
class Infilled:
    rows: torch.Tensor  # (b,) indices into the held-out set (repeats allowed: several draws of one row)
    part: HeldOut  # those rows (trimmed to the longest of them unless trim=False)
    generation: Generation  # their generations, row for row

    @property
    def passes(self) -> int:
        """Trunk passes the batch spent (generator + critic)."""
        return self.generation.passes["generator"] + self.generation.passes["critic"]


def infill(model: DiffusionLM, held: HeldOut, batches: Iterable[tuple[torch.Tensor, list[int]]], cfg: SampleConfig,
           *, calibration=None, allow_null: bool = False, constraint=None, trim: bool = True,
           on_batch=None) -> Iterator[Infilled]:
    """Generate each batch of (held-out row indices, one seed per row): the rows' masked regions are
    filled, everything else stays. `constraint`: a `SlotConstraint` over the rows of `held` (scaffold
    slots). trim: cut each batch to its longest row, which saves the padding's compute but lets
    the last bits of a float depend on the batch; calibrate keeps the full width, so its scores are the
    same bit for bit whatever the batch size. `on_batch(k)` after each batch of k rows."""
    for rows, seeds in batches:
        part = held.take(rows, trim)
        gen = generate(model, part.template, part.protected, cfg, row_seeds=seeds, calibration=calibration,
                       allow_null=allow_null, constraint=None if constraint is None else constraint.take(rows))
        yield Infilled(rows, part, gen)
        if on_batch:
            on_batch(len(rows))
