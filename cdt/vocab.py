"""Character vocabulary with the specials [MASK], [PAD], [NULL].

Ids 0..2 are the specials, ordinary characters follow in sorted order, so a
vocabulary is fully described by its character list (stored in checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cdt.errors import CdtError

MASK, PAD, NULL = "[MASK]", "[PAD]", "[NULL]"
SPECIALS = (MASK, PAD, NULL)
MASK_ID, PAD_ID, NULL_ID = 0, 1, 2
# an ordinary character of its own: a vocabulary that holds it reads every character it lacks as this one
FALLBACK = "\ufffd"


def emittable(vocab_size: int, allow_null: bool = False, device=None) -> torch.Tensor:
    """(v,) bool: ids a sampler may write into text. Never [MASK]/[PAD]; [NULL] only in scaffolds."""
    ok = torch.ones(vocab_size, dtype=torch.bool, device=device)
    ok[MASK_ID] = ok[PAD_ID] = False
    ok[NULL_ID] = allow_null
    return ok


@dataclass(frozen=True)
class Vocab:
    chars: tuple[str, ...]
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise CdtError("vocabulary must be distinct single characters")
        object.__setattr__(self, "_index", {c: i + len(SPECIALS) for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str, extra: str = "") -> "Vocab":
        return cls(tuple(sorted(set(text) | set(extra))))

    def id_of(self, ch: str) -> int | None:
        """The id of one character, or None when it is not in the vocabulary."""
        return self._index.get(ch)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    mask_id, pad_id, null_id = MASK_ID, PAD_ID, NULL_ID

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    @property
    def fallback(self) -> int | None:
        """The id every unknown character is read as, when the vocabulary holds `FALLBACK` (else None:
        an unknown character is an error)."""
        return self._index.get(FALLBACK)

    @property
    def reads_every_character(self) -> bool:
        return self.fallback is not None

    def encode(self, text: str) -> list[int]:
        bad = self.unknown(text)
        if bad and self.fallback is not None:
            return [self._index.get(c, self.fallback) for c in text]
        if bad:
            shown = ", ".join(repr(c) for c in bad[:10])
            raise CdtError(f"characters outside the model's vocabulary: {shown}")
        return [self._index[c] for c in text]

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised encode for corpora: (len(text),) int32."""
        if not text:
            return np.zeros(0, dtype=np.int32)
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        known = np.array(sorted(ord(c) for c in self.chars), dtype=np.uint32)
        pos = np.searchsorted(known, codes)
        pos = np.minimum(pos, len(known) - 1)
        if not np.all(known[pos] == codes):
            return np.array(self.encode(text), dtype=np.int32)  # the fallback, or an error naming them
        return (pos + len(SPECIALS)).astype(np.int32)

    def decode(self, ids, mask_char: str = "_") -> str:
        """Text of `ids`: [PAD] and [NULL] dropped, [MASK] shown as `mask_char`."""
        out = []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i == MASK_ID:
                out.append(mask_char)
            elif i >= len(SPECIALS):
                out.append(self.chars[i - len(SPECIALS)])
        return "".join(out)

    def slot_pieces(self) -> tuple:
        """Each id's text for a scaffold slot's automaton: None for the specials, then one character each."""
        return (None,) * len(SPECIALS) + self.chars

    def word_characters(self) -> torch.Tensor:
        """(len,) bool: the ids of letters and digits, the characters a word is made of (model.word_buckets)."""
        out = torch.zeros(len(self), dtype=torch.bool)
        out[[i for c, i in self._index.items() if c.isalnum()]] = True
        return out

    def emittable(self, allow_null: bool = False) -> torch.Tensor:
        return emittable(len(self), allow_null)

    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(tuple(d["chars"]))
