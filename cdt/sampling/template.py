"""Templates: protected text plus a masked region, as (ids, protected) rows."""

from __future__ import annotations

import torch

from cdt.data import SEPARATOR
from cdt.errors import CdtError
from cdt.vocab import MASK_ID, PAD_ID, Vocab


def answer_templates(corpus, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first n held-out rows of a prompted corpus: (clean, template with the answer masked, protected)."""
    clean = torch.from_numpy(corpus.val.ids[:n].astype("int64"))
    answer = torch.from_numpy(corpus.val.maskable[:n].copy())
    width = int((clean != PAD_ID).sum(1).max())  # trim the shared padding
    clean, answer = clean[:, :width], answer[:, :width]
    return clean, clean.masked_fill(answer, MASK_ID), ~answer


def prompt_template(vocab: Vocab, prompt: str, length: int, block_size: int, n: int = 1,
                    separator: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`prompt` (+ the request/answer separator when the model was trained on prompts) then `length` masks.

    Returns ids (n, L) with [MASK] in the region to generate and protected (n, L) = the prompt.
    """
    if length < 1:
        raise CdtError("--length must be at least 1")
    head = vocab.encode(prompt + SEPARATOR) if prompt and separator else vocab.encode(prompt)
    if len(head) + length > block_size:
        raise CdtError(f"prompt ({len(head)} characters) plus --length {length} exceeds the model's block size "
                       f"{block_size}; shorten one of them")
    ids = torch.tensor(head + [MASK_ID] * length).repeat(n, 1)
    protected = torch.zeros_like(ids, dtype=torch.bool)
    protected[:, : len(head)] = True
    return ids, protected
