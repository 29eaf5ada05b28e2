"""Held-out rows to infill and grade, shared by `cdt eval` and `cdt calibrate`.

The rows come from the checkpoint's own validation split (toolcalls records, or
evenly spaced windows of a text file's last 10%), so no command grades on training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cdt.checkpoint import Checkpoint
from cdt.data import has_records, load_corpus
from cdt.errors import CdtError, UsageError
from cdt.sampling.template import heldout_templates
from cdt.vocab import PAD_ID


@dataclass
class HeldOut:
    clean: torch.Tensor  # (n, L) the reference rows
    template: torch.Tensor  # (n, L) the rows with the region to infill masked
    protected: torch.Tensor  # (n, L) bool, everything outside that region
    records: list | None  # toolcalls records (grading by field), None for text
    masking: str
    scaffold: bool = False  # answers in the scaffold layout (an empty optional slot means null)

    def __len__(self) -> int:
        return len(self.clean)

    def lengths(self) -> torch.Tensor:
        """(n,) each row's length ([PAD] only ever follows a row's text)."""
        return (self.clean != PAD_ID).sum(1)

    def take(self, rows: torch.Tensor, trim: bool = True) -> HeldOut:
        """These rows (indices into this set, repeats allowed), trimmed to the longest of them (the
        columns cut are [PAD] in every row taken, which no position attends to) or at full width."""
        width = int((self.clean[rows] != PAD_ID).sum(1).max()) if trim else self.clean.shape[1]
        records = [self.records[int(i)] for i in rows] if self.records is not None else None
        return HeldOut(self.clean[rows, :width], self.template[rows, :width], self.protected[rows, :width],
                       records, self.masking, self.scaffold)

    def by_length(self, batch_size: int) -> list[torch.Tensor]:
        """Row indices in batches of similar length (ordered by length, then index): taken, a batch is
        trimmed to its longest row, so no batch spends compute on the padding of the longest held-out row.
        Rows keep their own seeds and graders sum over rows, so the order changes no result."""
        order = torch.from_numpy(np.argsort(self.lengths().numpy(), kind="stable"))
        return [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]

    def region(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """(rows, L) bool: the masked positions a generation is graded on."""
        return ~self.protected[lo:hi] & (self.clean[lo:hi] != PAD_ID)

    def region_text(self, vocab, row: torch.Tensor, i: int) -> tuple[str, str]:
        """Row i's region as generated in `row` and in the reference, decoded ([NULL] dropped)."""
        m = self.region(i, i + 1)[0]
        return vocab.decode(row[m]), vocab.decode(self.clean[i][m])

    def exact(self, vocab, tokens: torch.Tensor, lo: int = 0) -> list[bool]:
        """Per generated row (rows lo.. of this set): does its region read as the reference's once
        decoded? [NULL] is dropped, so an answer ended inside an [NULL] tail is graded on its text;
        without [NULL] this is position-by-position equality."""
        return [a == b for a, b in (self.region_text(vocab, t, lo + k) for k, t in enumerate(tokens))]


def default_masking(ckpt: Checkpoint) -> str:
    """`answer` for a corpus with prompts, `span` for plain text (masking a whole window leaves no context)."""
    return "answer" if has_records(ckpt.config.data.source) else "span"


def load_heldout(ckpt: Checkpoint, n: int, masking: str | None = None, ratio: float = 0.3,
                 seed: int = 0, scaffold: bool | None = None, clip: bool = False) -> HeldOut:
    """The first n validation rows of the checkpoint's corpus, with a region masked for infilling.
    scaffold: answers in the scaffold layout (default: as the checkpoint was trained).
    clip: fewer rows when the split has fewer (otherwise that is an error)."""
    if n < 1:
        raise UsageError("the number of held-out rows must be at least 1")
    data, block = ckpt.config.data, ckpt.config.model.block_size
    masking = masking or default_masking(ckpt)
    if not has_records(data.source) and masking == "answer":
        raise UsageError(f"--mask answer needs a corpus with prompts; {data.source} is plain text: "
                         "use --mask span or --mask random")
    scaffold = data.scaffold if scaffold is None else scaffold
    if scaffold and not has_records(data.source):
        raise UsageError("scaffolds need a checkpoint trained on a corpus of calls (toolcalls or functions)")
    try:
        corpus = load_corpus(data.source, block, data.n_records, data.seed, scaffold,
                             0 if scaffold else data.answer_tail, ckpt.vocab)
    except CdtError as e:
        if scaffold and not data.scaffold and "block_size" in str(e):
            raise CdtError(f"scaffolded rows do not fit this checkpoint's block size {block}; "
                           "train with cdt train --scaffold") from None
        raise
    if corpus.vocab != ckpt.vocab:
        raise CdtError(f"the corpus {data.source} no longer matches this checkpoint's vocabulary")
    available = len(corpus.val)  # records, or distinct window starts in a text split
    n = min(n, available) if clip else n
    if n > available:
        raise UsageError(f"asked for {n:,} held-out rows; the validation split has {available:,}")
    clean, template, protected = heldout_templates(corpus, n, masking, ratio, seed)
    records = corpus.records[:n] if corpus.records else None
    return HeldOut(clean, template, protected, records, masking, scaffold)
