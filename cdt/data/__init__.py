"""Corpora as training rows: token ids right-padded with [PAD], plus which positions may be masked.

Two sources share one interface (`Corpus`): the embedded `toolcalls` records (prompt
protected, answer maskable) and any UTF-8 text file (character windows, all maskable).
Batches are a pure function of (seed, step, rank), so resuming and multi-process
training need no sampler state.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch

from cdt import tokenizer as tokenizer_module
from cdt.data import functions, toolcalls
from cdt.errors import CdtError
from cdt.vocab import FALLBACK, NULL_ID, PAD_ID, Vocab

SEPARATOR = "\n"  # between a request and its answer


@dataclass
class Batch:
    ids: torch.Tensor  # (b, n) long, clean tokens
    maskable: torch.Tensor  # (b, n) bool, positions the noise may mask (never [PAD])


@dataclass
class Rows:
    """Fixed rows (toolcalls) or one long token stream cut into windows (text)."""

    ids: np.ndarray  # (N, L) int32 rows, or (T,) int32 stream
    maskable: np.ndarray | None  # (N, L) bool for rows; None = every non-PAD position
    window: int = 0  # > 0: `ids` is a stream and items are windows of this length

    @cached_property
    def lengths(self) -> np.ndarray:
        """(N,) non-[PAD] length of each row."""
        return (self.ids != PAD_ID).sum(1)

    def __len__(self) -> int:
        return max(len(self.ids) - self.window + 1, 1) if self.window else len(self.ids)

    def take(self, index: np.ndarray) -> Batch:
        if self.window:
            span = min(self.window, len(self.ids))
            ids = np.stack([self.ids[i : i + span] for i in index])
            maskable = np.ones_like(ids, dtype=bool)
        else:
            ids, maskable = self.ids[index], self.maskable[index]
            width = int((ids != PAD_ID).sum(1).max())  # trim the batch to its longest row
            ids, maskable = ids[:, :width], maskable[:, :width]
        return Batch(torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(maskable.copy()))


@dataclass
class Corpus:
    name: str
    vocab: Vocab
    train: Rows
    val: Rows
    block_size: int
    info: dict = field(default_factory=dict)  # what the loader reports (sizes, overlap)
    records: list = field(default_factory=list, repr=False)  # validation records, where the corpus has them

    def batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
              length_groups: int = 1) -> Batch:
        """Rows for `rank` at `step`: epochs of a seeded permutation, ranks take disjoint slices.

        length_groups > 1: that many consecutive global batches are drawn together, sorted by
        row length and dealt out in a seeded order, so each batch pads less (fixed rows only).
        """
        global_batch = batch_size * world_size
        if length_groups <= 1 or self.train.window:
            rows = self._stream(seed, step * global_batch, global_batch)
        else:
            chunk = step // length_groups
            pool = self._stream(seed, chunk * global_batch * length_groups, global_batch * length_groups)
            pool = pool[np.argsort(self.train.lengths[pool], kind="stable")].reshape(length_groups, global_batch)
            rows = pool[np.random.default_rng([seed, chunk, 1]).permutation(length_groups)[step % length_groups]]
        return self.train.take(rows[rank * batch_size : (rank + 1) * batch_size])

    def _stream(self, seed: int, start: int, count: int) -> np.ndarray:
        """Items start..start+count of the endless sequence of seeded epoch permutations."""
        n = len(self.train)
        pos = np.arange(start, start + count)
        return np.array([_permutation(seed, int(e), n)[o] for e, o in zip(pos // n, pos % n)])

    def val_batches(self, n_rows: int, batch_size: int):
        """The first `n_rows` validation items, in order (text: evenly spaced windows)."""
        count = min(n_rows, len(self.val)) if not self.val.window else n_rows
        if self.val.window:
            index = np.linspace(0, len(self.val) - 1, num=count).astype(np.int64)
        else:
            index = np.arange(count)
        for i in range(0, len(index), batch_size):
            yield self.val.take(index[i : i + batch_size])


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


# the embedded corpora of requests and calls: generator, whether a record is validation, its vocabulary
RECORD_CORPORA = {
    "toolcalls": (toolcalls.generate, lambda r: toolcalls.is_validation(r.prompt), None),
    "functions": (functions.generate, lambda r: functions.is_validation(r.tool),
                  Vocab.from_text(string.printable.strip() + " \n" + FALLBACK)),
}


def has_records(source: str) -> bool:
    """Whether a data source is one of the embedded corpora of requests and calls (not a text file)."""
    return source in RECORD_CORPORA


def load_corpus(data: str, block_size: int, n_records: int = 40000, seed: int = 0, scaffold: bool = False,
                answer_tail: int = 0, tokenizer="char") -> Corpus:
    """`toolcalls` or `functions` (embedded) or a path to a UTF-8 text file. scaffold: answers in the
    slot layout of `cdt.scaffold.layout`, only the value slots maskable. answer_tail: see `_record_rows`.
    tokenizer: char, bpe:SIZE (trained on the training split) or a tokenizer.json (`cdt.tokenizer`); or a
    checkpoint's own tokenizer, which a subword corpus uses as it is (the character vocabulary is rebuilt)."""
    if answer_tail < 0:
        raise CdtError(f"data.answer_tail must be at least 0, got {answer_tail}")
    if isinstance(tokenizer, str):
        tokenizer_module.check_spec(tokenizer)
    elif isinstance(tokenizer, Vocab):
        tokenizer = "char"
    if has_records(data):
        if scaffold and answer_tail:
            raise CdtError("data.answer_tail and data.scaffold do not combine (scaffold slots already end in [NULL])")
        return _records_corpus(data, n_records, block_size, seed, scaffold, answer_tail, tokenizer)
    if scaffold:
        raise CdtError("data.scaffold needs a corpus of calls, toolcalls or functions (a text file has no schema)")
    if answer_tail:
        raise CdtError("data.answer_tail needs a corpus of calls, toolcalls or functions (a text file has no answers)")
    return _text_corpus(Path(data), block_size, tokenizer)


def _records_corpus(name: str, n_records: int, block_size: int, seed: int, scaffold: bool = False,
                    answer_tail: int = 0, tokenizer: str = "char") -> Corpus:
    generate, in_validation, vocab = RECORD_CORPORA[name]
    records = generate(n_records, seed)
    train = [r for r in records if not in_validation(r)]
    val = [r for r in records if in_validation(r)]
    overlap = len({r.prompt for r in train} & {r.prompt for r in val})
    texts = [r.prompt + SEPARATOR + r.answer for r in records]
    if tokenizer != "char":  # trained on (or read for) the training split alone
        vocab = tokenizer_module.make(tokenizer, "".join(r.prompt + SEPARATOR + r.answer + "\n" for r in train))
    vocab = vocab or Vocab.from_text("".join(texts), extra=string.printable.strip() + " \n")
    if scaffold:
        vocab.slot_pieces()  # a tokenizer that cannot hold a slot says so before any row is laid out

    from cdt.scaffold.layout import record_row, record_rows

    def rows(recs: list, split: int) -> Rows:  # split 1 = train, 2 = validation, each with its own tail draws
        if scaffold:  # training rows also teach the choice among offered tools
            return record_rows(recs, vocab, block_size, names=split == 1)
        return _record_rows(recs, vocab, block_size, answer_tail, np.random.default_rng([seed, split]))

    if scaffold:
        longest = max(len(record_row(r, vocab)[0]) for r in records)
    else:
        longest = max(len(t) for t in texts) if tokenizer == "char" else max(len(vocab.encode(t)) for t in texts)
    if longest > block_size:
        raise CdtError(f"{name} rows{' (scaffolded)' if scaffold else ''} are up to {longest} "
                       f"{'characters' if tokenizer == 'char' else 'tokens'}; raise model.block_size (now {block_size})")
    per_token = {} if tokenizer == "char" else {"chars_per_token": _chars_per_token(vocab, [r.answer for r in val])}
    return Corpus(
        name=name,
        vocab=vocab,
        train=rows(train, 1),
        val=rows(val, 2),
        block_size=block_size,
        info={"records": len(records), "train": len(train), "val": len(val), "overlap": overlap,
              "longest_row": longest, "seed": seed, **({"answer_tail": answer_tail} if answer_tail else {}),
              **per_token},
        records=val,
    )


def _record_rows(records: list, vocab: Vocab, block_size: int, tail: int = 0, rng=None) -> Rows:
    """Request + separator (protected) then answer (maskable), right-padded with [PAD].

    tail > 0: each answer is followed by a seeded 0..tail [NULL] (also maskable, cut at the block
    size), so a masked region is longer than its answer by an amount the model cannot know, and
    the model learns to end the answer itself; decoding drops [NULL]."""
    ids = np.full((len(records), block_size), PAD_ID, dtype=np.int32)
    maskable = np.zeros((len(records), block_size), dtype=bool)
    extra = rng.integers(0, tail + 1, size=len(records)) if tail else np.zeros(len(records), dtype=np.int64)
    for i, r in enumerate(records):
        head, answer = vocab.encode_array(r.prompt + SEPARATOR), vocab.encode_array(r.answer)
        end = min(len(head) + len(answer) + int(extra[i]), block_size)
        ids[i, : len(head)] = head
        ids[i, len(head) : len(head) + len(answer)] = answer
        ids[i, len(head) + len(answer) : end] = NULL_ID
        maskable[i, len(head) : end] = True
    return Rows(ids, maskable)


def read_text(path: Path) -> str:
    """A UTF-8 text file's contents, or a one-line error naming the file."""
    if not path.exists():
        raise CdtError(f"data file not found: {path}")
    if not path.is_file():
        raise CdtError(f"data path is not a file: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise CdtError(f"data file is empty: {path}")
    if b"\x00" in raw:
        raise CdtError(f"data file looks binary (contains NUL bytes): {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CdtError(f"data file is not valid UTF-8 (byte {e.start}): {path}") from None


def _text_corpus(path: Path, block_size: int, tokenizer: str = "char") -> Corpus:
    text = read_text(path)
    if len(text) < 20:
        raise CdtError(f"data file is too short to split into train and validation ({len(text)} characters): {path}")
    cut = int(len(text) * 0.9)  # 90/10 split by position
    if tokenizer == "char":
        vocab = Vocab.from_text(text)
        train, val, extra = vocab.encode_array(text[:cut]), vocab.encode_array(text[cut:]), {}
    else:  # a subword tokenizer learns from the training part alone
        vocab = tokenizer_module.make(tokenizer, text[:cut])
        train, val = vocab.encode_array(text[:cut]), vocab.encode_array(text[cut:])
        extra = {"train_tokens": len(train), "val_tokens": len(val),
                 "chars_per_token": (len(text) - cut) / max(len(val), 1)}
    return Corpus(
        name=str(path),
        vocab=vocab,
        train=Rows(train, None, window=block_size),
        val=Rows(val, None, window=block_size),
        block_size=block_size,
        info={"characters": len(text), "train_chars": cut, "val_chars": len(text) - cut, "overlap": 0, **extra},
    )


def _chars_per_token(vocab, texts: list[str]) -> float:
    """Characters per token over `texts`: converts bits per token to bits per character."""
    return sum(map(len, texts)) / max(sum(len(vocab.encode(t)) for t in texts), 1)
