"""Subword tokenizers beside the character vocabulary: `--tokenizer char|bpe:SIZE|PATH`.

`Bpe` wraps a Hugging Face `tokenizers` tokenizer (the optional extra `cdt[hf]`) behind the interface
`Vocab` offers, so everything above it sees token ids alone. cdt's ids keep the specials at 0..2
([MASK], [PAD], [NULL]); the inner tokenizer's own ids may differ (a `tokenizer.json` of a pretrained
model puts its mask token anywhere), so `inner_of` maps cdt ids to inner ids and `cdt_of` back. For a
BPE cdt trains itself the map is the identity: the specials are its first three tokens.

A checkpoint stores the tokenizer as its JSON text, so it alone rebuilds the model's ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from cdt.errors import CdtError, UsageError
from cdt.vocab import MASK, MASK_ID, NULL, NULL_ID, PAD, PAD_ID, SPECIALS, Vocab, emittable

HF_INSTALL = "pip install 'cdt[hf]'"
# what a pretrained tokenizer may call the tokens cdt names [MASK] and [PAD] (BERT's, RoBERTa's spellings)
MASK_NAMES, PAD_NAMES, END_NAMES = (MASK, "<mask>"), (PAD, "<pad>"), ("[SEP]", "</s>")
# JSON as a scaffold writes it, and letters a lowercasing or ASCII-only tokenizer loses: what a slot's
# tokenizer must write back as it read it
COMPOSE_PROBE, CASE_PROBE = '{"name": "Fn_1", "arguments": {"a b": [1, -2.5], "c": "x\\"y", "d": null}}', "Über"


def need_hf(what: str):
    """The `tokenizers` module, or a one-line error naming the install line."""
    try:
        import tokenizers
    except ImportError:
        raise CdtError(f"{what} needs the optional Hugging Face libraries: {HF_INSTALL}") from None
    return tokenizers


@dataclass(frozen=True)
class Bpe:
    """A `tokenizers` tokenizer with cdt's specials. `spec` is how it was made (bpe:SIZE or a path)."""

    json_text: str
    mask_token: str = MASK
    pad_token: str = PAD
    spec: str = "bpe"
    null_token: str = NULL  # a pretrained model's end-of-text token can serve, so its embeddings keep their size
    _inner: object = field(init=False, repr=False, compare=False)
    inner_of: np.ndarray = field(init=False, repr=False, compare=False)  # (len,) cdt id -> inner id
    cdt_of: np.ndarray = field(init=False, repr=False, compare=False)  # (inner size,) inner id -> cdt id
    pieces: tuple = field(init=False, repr=False, compare=False)  # each cdt id's text on its own
    composes: bool = field(init=False, repr=False, compare=False)  # decoding = joining the pieces (see slot_pieces)

    mask_id, pad_id, null_id = MASK_ID, PAD_ID, NULL_ID

    def __post_init__(self):
        tokenizers = need_hf("a subword tokenizer")
        try:
            inner = tokenizers.Tokenizer.from_str(self.json_text)
        except Exception as e:  # the library raises its own exception types for a malformed file
            raise CdtError(f"not a tokenizer.json the tokenizers library reads: {str(e).splitlines()[0]}") from None
        names = (self.mask_token, self.pad_token, self.null_token)
        if len(set(names)) < 3:
            raise CdtError(f"a tokenizer needs three distinct tokens for [MASK], [PAD] and [NULL], not {names}")
        missing = [t for t in names if inner.token_to_id(t) is None]
        if missing:
            inner.add_special_tokens(missing)
        inner.encode_special_tokens = True  # "[MASK]" or "<s>" written in a text is text, never a special id
        heads = [inner.token_to_id(t) for t in names]
        size = inner.get_vocab_size(with_added_tokens=True)
        rest = [i for i in range(size) if i not in heads]
        inner_of = np.array(heads + rest, dtype=np.int64)
        cdt_of = np.empty(size, dtype=np.int64)
        cdt_of[inner_of] = np.arange(size)
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "inner_of", inner_of)
        object.__setattr__(self, "cdt_of", cdt_of)
        object.__setattr__(self, "pieces", tuple(inner.decode([int(i)], skip_special_tokens=False) for i in inner_of))
        joined = "".join(self.pieces[i] for i in self.encode(COMPOSE_PROBE))  # ASCII: whole characters each
        round_trip = self.decode(self.encode(CASE_PROBE)) == CASE_PROBE
        object.__setattr__(self, "composes", joined == COMPOSE_PROBE and round_trip)

    def __len__(self) -> int:
        return len(self.inner_of)

    @property
    def kind(self) -> str:
        return "bpe"

    @property
    def fallback(self) -> int | None:
        """Every character encodes (byte-level pieces, or the tokenizer's own unknown token)."""
        return None

    reads_every_character = True

    def unknown(self, text: str) -> list[str]:
        return []

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        if not text:
            return np.zeros(0, dtype=np.int32)
        inner = np.asarray(self._inner.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        return self.cdt_of[inner].astype(np.int32)

    def decode(self, ids, mask_char: str = "_") -> str:
        """Text of `ids`: [PAD] and [NULL] dropped, each [MASK] shown as `mask_char`; the ordinary tokens
        between two masks decode together (a character split over byte pieces comes back whole)."""
        out, run = [], []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i >= len(SPECIALS):
                run.append(int(self.inner_of[i]))
                continue
            if i != MASK_ID:
                continue
            if run:
                out.append(self._inner.decode(run, skip_special_tokens=False))
                run = []
            out.append(mask_char)
        if run:
            out.append(self._inner.decode(run, skip_special_tokens=False))
        return "".join(out)

    def word_characters(self) -> torch.Tensor:
        """(len,) bool: tokens that are all letters and digits (model.word_buckets)."""
        return torch.tensor([p.isalnum() for p in self.pieces], dtype=torch.bool)

    def emittable(self, allow_null: bool = False) -> torch.Tensor:
        return emittable(len(self), allow_null)

    def slot_pieces(self) -> tuple:
        """Each id's text for a scaffold slot's automaton (`cdt.scaffold.automaton`), None for the specials
        and for a byte piece that is no whole character (such a character cannot be written in a slot).
        Only a tokenizer whose decoded text is its pieces joined can hold a slot: byte-level BPE can;
        WordPiece (spaces between words), lowercasing or an unknown token cannot, and say so."""
        if not self.composes:
            raise CdtError(f"schema scaffolds need a tokenizer whose text is its tokens' pieces joined (a byte-level "
                           f"BPE such as --tokenizer bpe:SIZE); {self.spec} does not write JSON back as it read it")
        return self._slot_pieces

    @cached_property
    def _slot_pieces(self) -> tuple:  # once per tokenizer: a scaffold compiles a language per slot
        return (None,) * len(SPECIALS) + tuple(p if p and "\ufffd" not in p else None
                                               for p in self.pieces[len(SPECIALS):])

    def to_dict(self) -> dict:
        return {"kind": "bpe", "json": self.json_text, "mask_token": self.mask_token, "pad_token": self.pad_token,
                "spec": self.spec, "null_token": self.null_token}

    @classmethod
    def from_dict(cls, d: dict) -> "Bpe":
        return cls(d["json"], d.get("mask_token", MASK), d.get("pad_token", PAD), d.get("spec", "bpe"),
                   d.get("null_token", NULL))


def from_dict(d: dict) -> Vocab | Bpe:
    """A checkpoint's tokenizer entry: the character vocabulary (no kind, or "char") or a BPE."""
    kind = d.get("kind", "char")
    if kind == "char":
        return Vocab.from_dict(d)
    if kind == "bpe":
        return Bpe.from_dict(d)
    raise CdtError(f"unknown tokenizer kind {kind!r}")


def check_spec(spec: str) -> None:
    """A one-line usage error for a --tokenizer value that cannot work (before any data is read)."""
    if spec == "char":
        return
    if spec.startswith("bpe:"):
        size = spec[4:]
        if not size.isdigit() or not 260 <= int(size) <= 1_000_000:
            raise UsageError(f"--tokenizer {spec}: the BPE size must be a whole number from 260 (the 256 bytes "
                             "and the specials) to 1000000, e.g. bpe:2048")
        return
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UsageError(f"--tokenizer {spec}: expected char, bpe:SIZE or a tokenizer.json file (not found)")


def make(spec, train_text: str) -> Vocab | Bpe:
    """The tokenizer `spec` names: char (from `train_text`'s characters), bpe:SIZE (byte-level BPE trained on
    `train_text`, deterministic), or a tokenizer.json path (or a directory holding one)."""
    if not isinstance(spec, str):  # a tokenizer already made (a checkpoint's)
        return spec
    check_spec(spec)
    if spec == "char":
        return Vocab.from_text(train_text)
    if spec.startswith("bpe:"):
        return train_bpe(train_text, int(spec[4:]))
    return load_file(spec)


def train_bpe(text: str, size: int) -> Bpe:
    tokenizers = need_hf("--tokenizer bpe:SIZE")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    inner = tokenizers.Tokenizer(models.BPE())
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    inner.train_from_iterator(text.splitlines(keepends=True), trainer)
    return Bpe(inner.to_str(), spec=f"bpe:{size}")


def load_file(spec: str | Path, mask_token: str | None = None, pad_token: str | None = None,
              reuse_end: bool = False) -> Bpe:
    """A tokenizer.json (or a directory holding one). The mask and pad tokens: given, or read from the
    directory's special_tokens_map.json / tokenizer_config.json, or the usual spellings, or added.
    reuse_end: [NULL] is the model's own end token (sep_token, eos_token: [SEP], </s>) where it has one,
    so a pretrained model's embedding table keeps its size (and a frozen one stays bit for bit)."""
    path = Path(spec)
    folder = path if path.is_dir() else path.parent
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise CdtError(f"no tokenizer.json at {spec}")
    text = path.read_text(encoding="utf-8")
    named = _special_names(folder)
    vocab = json.loads(text).get("model", {}).get("vocab", {})
    added = {t.get("content") for t in json.loads(text).get("added_tokens", [])}
    known = set(vocab) | added if isinstance(vocab, dict) else added

    def pick(given, key, names):
        return given or named.get(key) or next((n for n in names if n in known), names[0])

    mask, pad = pick(mask_token, "mask_token", MASK_NAMES), pick(pad_token, "pad_token", PAD_NAMES)
    end = named.get("sep_token") or named.get("eos_token") or next((n for n in END_NAMES if n in known), None)
    null = end if reuse_end and end in known and end not in (mask, pad) and NULL not in known else NULL
    return Bpe(text, mask, pad, str(spec), null)


def _special_names(folder: Path) -> dict:
    """{mask_token, pad_token, sep_token, eos_token} as a pretrained model's tokenizer files name them."""
    out = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        for key in ("mask_token", "pad_token", "sep_token", "eos_token"):
            v = d.get(key)
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str) and key not in out:
                out[key] = v
    return out
