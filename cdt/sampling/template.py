"""Templates: protected text plus a masked region, as (ids, protected) rows."""

from __future__ import annotations

import numpy as np
import torch

from cdt.data import SEPARATOR
from cdt.errors import CdtError, UsageError
from cdt.noise import span_region
from cdt.rng import seed_for
from cdt.settings import MASKS
from cdt.vocab import MASK_ID, PAD_ID, Vocab


def heldout_templates(corpus, n: int, masking: str = "answer", ratio: float = 0.3,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first n held-out rows as (clean, template, protected); the masked region is what to infill.

    masking: `answer` masks every maskable position (a toolcalls answer; a whole text window);
    `random` masks each maskable position with probability `ratio` (at least one per row);
    `span` masks one contiguous run of round(ratio * maskable) positions at a random start.
    Draws come from seed_for(seed, row), so a row's region does not depend on n.
    """
    if masking not in MASKS:
        raise UsageError(f"unknown mask {masking!r}; choose from {', '.join(MASKS)}")
    if masking != "answer" and not 0.0 < ratio <= 1.0:
        raise UsageError("--mask-ratio must be in (0, 1]")
    batch = next(corpus.val_batches(n, n))
    clean, maskable = batch.ids, batch.maskable & (batch.ids != PAD_ID)
    region = maskable.clone() if masking == "answer" else torch.zeros_like(maskable)
    starts, counts = torch.zeros(len(clean), dtype=torch.long), torch.zeros(len(clean), dtype=torch.long)
    for i in range(len(clean)) if masking != "answer" else ():
        rng = np.random.default_rng(seed_for(seed, i))
        where = maskable[i].nonzero().flatten().numpy()
        if masking == "random":
            pick = where[rng.random(len(where)) < ratio]
            region[i, torch.from_numpy(pick if len(pick) else where[rng.integers(len(where)):][:1])] = True
        else:
            counts[i] = max(1, round(ratio * len(where)))
            starts[i] = int(rng.integers(len(where) - counts[i] + 1))
    if masking == "span":
        region = span_region(maskable, starts, counts)
    return clean, clean.masked_fill(region, MASK_ID), ~region


def prompt_template(vocab: Vocab, prompt: str, length: int, block_size: int, n: int = 1,
                    separator: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`prompt` (+ the request/answer separator when the model was trained on prompts) then `length` masks.

    Returns ids (n, L) with [MASK] in the region to generate and protected (n, L) = the prompt.
    """
    if length < 1:
        raise CdtError("--length must be at least 1")
    head = vocab.encode(prompt + SEPARATOR) if prompt and separator else vocab.encode(prompt)
    if len(head) + length > block_size:
        if not head:
            raise CdtError(f"--length {length} exceeds the model's block size {block_size}: "
                           f"--length can be at most {block_size}")
        sep = len(head) - len(prompt)
        size = f"{len(prompt)} characters" + (f" + {sep} separator" if sep else "")
        room = (f"--length can be at most {block_size - len(head)} with this prompt" if len(head) < block_size
                else "shorten the prompt")
        raise CdtError(f"prompt ({size}) plus --length {length} exceeds the model's block size {block_size}: {room}")
    ids = torch.tensor(head + [MASK_ID] * length).repeat(n, 1)
    protected = torch.zeros_like(ids, dtype=torch.bool)
    protected[:, : len(head)] = True
    return ids, protected
