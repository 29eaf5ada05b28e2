"""The scaffold layout: a call's JSON text with every value a fixed-size slot, and what each slot may hold.

For a tool `{"name": T, "arguments": {k: v, ...}}` the scaffold writes braces, keys,
commas, the tool name and, for string and enum arguments, the quotes; every value is a
*slot* of `budget` positions. A value shorter than its slot is followed by `[NULL]`,
which decoding drops.

An optional string or enum argument is quoted by the scaffold too; a slot left all
`[NULL]` then means `null` (the request did not mention it), so no generated character
can break the quotes. Optional numbers and booleans hold their JSON text, `null` included.

The same layout is used to train (`cdt train --scaffold`: answers rendered with their
values, slots padded with `[NULL]`) and to generate (slots masked), so the model fills
at inference exactly what it learned to fill.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from cdt.errors import CdtError
from cdt.scaffold.schema import Field, Schema, builtin
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID, Vocab


def render(schema: Schema, vocab: Vocab, values: dict | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of the scaffolded call and which positions are slots.

    values=None: every slot is [MASK] (generation). Otherwise each slot holds its value's text
    followed by [NULL] up to the slot size (training and reference rows); a value longer than
    its slot is an error.
    """
    ids: list[int] = []
    slots: list[bool] = []

    def text(s: str) -> None:
        ids.extend(vocab.encode(s))
        slots.extend([False] * len(s))

    text('{"name": ' + json.dumps(schema.tool, ensure_ascii=False) + ', "arguments": {')
    for f in schema.fields:  # an enum value the vocabulary cannot write could never fill its slot
        if f.type == "enum" and (bad := vocab.unknown("".join(f.enum))):
            raise CdtError(f"the enum of {f.name!r} holds characters outside the model's vocabulary: "
                           f"{', '.join(map(repr, bad[:10]))}")
    for i, f in enumerate(schema.fields):
        text(("" if i == 0 else ", ") + json.dumps(f.name, ensure_ascii=False) + ": " + ('"' if f.quoted_by_scaffold else ""))
        if values is None:
            ids.extend([MASK_ID] * f.slot)
        else:
            content = f.slot_text(values[f.name])
            if len(content) > f.slot:
                raise CdtError(f"value {content!r} of {f.name!r} does not fit its slot of {f.slot} positions")
            ids.extend(vocab.encode(content) + [NULL_ID] * (f.slot - len(content)))
        slots.extend([True] * f.slot)
        if f.quoted_by_scaffold:
            text('"')
    text("}}")
    return ids, slots


def template(schema: Schema, vocab: Vocab, prompts: list[str], separator: str, block_size: int):
    """(ids, protected) rows: each prompt + separator (protected), then the scaffold with masked slots,
    right-padded with [PAD] to the longest row."""
    body, slots = render(schema, vocab)
    rows = []
    for p in prompts:
        head = vocab.encode(p + separator)
        if len(head) + len(body) > block_size:
            raise CdtError(f"prompt ({len(head)} characters) plus the {schema.tool} scaffold ({len(body)}) exceeds "
                           f"the model's block size {block_size}")
        rows.append((head + body, [True] * len(head) + [not s for s in slots]))
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    protected = torch.ones((len(rows), width), dtype=torch.bool)
    for i, (r, p) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        protected[i, : len(p)] = torch.tensor(p)
    return ids, protected


def slot_characters(f: Field) -> set[str] | None:
    """The characters a slot may hold (besides [NULL], and never [NULL] first unless the value may be
    absent); None = any but a quote, a backslash or a newline.

    Keeps a generated value from breaking the JSON around it: no stray quote inside a string
    the scaffold quotes, only digits in an integer. (It cannot make `1-2` a number: that is
    left to the model and reported by `parse`.)"""
    if f.type == "enum":
        chars = set("".join(f.enum))
    elif f.type == "integer":
        chars = set("-0123456789")
    elif f.type == "number":
        chars = set("-.0123456789")
    elif f.type == "boolean":
        chars = set("truefals")
    else:
        chars = None
    if f.optional and chars is not None and not f.quoted_by_scaffold:
        chars |= set("nul")
    return chars


def slot_masks(schema: Schema, vocab: Vocab) -> torch.Tensor:
    """(len(body), v) bool: what each position of the rendered scaffold may hold."""
    v = len(vocab)
    rows = []
    for f in schema.fields:
        chars = slot_characters(f)
        if chars is None:
            m = torch.ones(v, dtype=torch.bool)
            banned = {'"', "\\", "\n"}
            for c in banned:
                if vocab.id_of(c) is not None:
                    m[vocab.id_of(c)] = False
        else:
            m = torch.zeros(v, dtype=torch.bool)
            m[[vocab.id_of(c) for c in chars if vocab.id_of(c) is not None]] = True
        m[[MASK_ID, PAD_ID]] = False
        m[NULL_ID] = True
        slot = m.expand(f.slot, v).clone()
        if not (f.optional and f.quoted_by_scaffold):  # only an optional quoted value may be empty (null)
            slot[0, NULL_ID] = False  # an empty number or boolean would leave `"key": ,`
        rows.append(slot)
    body, slots = render(schema, vocab)
    out = torch.ones(len(body), v, dtype=torch.bool)
    out[torch.tensor(slots)] = torch.cat(rows)
    return out


def allowed_rows(schemas: list[Schema], starts: list[int], width: int, vocab: Vocab) -> torch.Tensor:
    """(b, width, v) bool for rows whose scaffold begins at `starts[i]` (everything else unrestricted)."""
    out = torch.ones(len(schemas), width, len(vocab), dtype=torch.bool)
    for i, (schema, start) in enumerate(zip(schemas, starts)):
        m = slot_masks(schema, vocab)
        out[i, start : start + len(m)] = m
    return out




# training rows


def record_row(record, vocab: Vocab) -> tuple[list[int], list[bool]]:
    """A toolcalls record as a training row: request + separator, then its answer in the scaffold
    layout; maskable = the value slots."""
    from cdt.data import SEPARATOR

    head = vocab.encode(record.prompt + SEPARATOR)
    body, slots = render(builtin(record.tool), vocab, record.arguments)
    return head + body, [False] * len(head) + slots


def record_rows(records: list, vocab: Vocab, block_size: int):
    """`record_row` of every record, right-padded with [PAD] to the block size (a `cdt.data.Rows`)."""
    from cdt.data import Rows

    ids = np.full((len(records), block_size), PAD_ID, dtype=np.int32)
    maskable = np.zeros((len(records), block_size), dtype=bool)
    for i, r in enumerate(records):
        row, slots = record_row(r, vocab)
        ids[i, : len(row)] = row
        maskable[i, : len(row)] = slots
    return Rows(ids, maskable)
