"""The scaffold layout: a call's JSON text with every value a fixed-size slot, and what each slot may hold.

For a tool `{"name": T, "arguments": {k: v, ...}}` the scaffold writes braces, keys,
commas, the tool name and, for string and enum-of-strings arguments, the quotes; an object
argument's keys too (its fields are scaffolded in place); every other value is a *slot* of
`budget` positions. A value shorter than its slot is followed by `[NULL]`, which decoding drops.

An optional quoted argument left all `[NULL]` means `null`; any other optional slot may hold
`null`. Each slot is generated under its type's language (`languages.py`), so every call
parses and validates whatever the model, the temperature or the policy (`SlotConstraint`).

The same layout is used to train (`cdt train --scaffold`: answers rendered with their
values, slots padded with `[NULL]`) and to generate (slots masked), so the model fills
at inference exactly what it learned to fill.
"""

from __future__ import annotations

import numpy as np
import torch

from cdt.errors import CdtError, UsageError
from cdt.scaffold.automaton import compile_language, fill
from cdt.scaffold.languages import slot_language
from cdt.scaffold.schema import Field, Schema, builtin, json_text
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID, Vocab


def render(schema: Schema, vocab: Vocab, values: dict | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of the scaffolded call and which positions are slots.

    values=None: every slot is [MASK] (generation). Otherwise each slot holds its value's text
    followed by [NULL] up to the slot size (training and reference rows); a value longer than
    its slot is an error.
    """
    ids: list[int] = []
    slots: list[bool] = []

    def text(s: str) -> None:  # each piece of structure encodes apart: a subword tokenizer cuts it alike every time
        piece = vocab.encode(s)
        ids.extend(piece)
        slots.extend([False] * len(piece))

    def fields(fs, vals) -> None:
        for i, f in enumerate(fs):
            text(("" if i == 0 else ", ") + json_text(f.name) + ": ")
            value = None if vals is None else vals.get(f.name)
            if f.type == "object":
                text("{")
                fields(f.fields, None if vals is None else (value or {}))
                text("}")
                continue
            text('"' if f.quoted_by_scaffold else "")
            if vals is None:
                ids.extend([MASK_ID] * f.slot)
            else:
                ids.extend(_slot_ids(vocab, f, f.slot_text(value)))
            slots.extend([True] * f.slot)
            text('"' if f.quoted_by_scaffold else "")

    text(NAME_HEAD)  # the name apart, as `name_row` lays it out
    text(json_text(schema.tool)[1:-1])
    text(NAME_TAIL)
    fields(schema.fields, values)
    text("}}")
    return ids, slots


def _slot_ids(vocab, f: Field, content: str) -> list[int]:
    """A slot holding `content`: its tokens, then [NULL] up to the slot's size."""
    ids = vocab.encode(content)
    if len(ids) > f.slot:
        raise CdtError(f"value {content!r} of {f.name!r} does not fit its slot of {f.slot} positions")
    return ids + [NULL_ID] * (f.slot - len(ids))


def slot_fields(schema: Schema) -> list[Field]:
    """The fields that have a slot, in the order `render` lays the slots out (objects' fields in place)."""
    return [g for f in schema.fields for g in (slot_fields(Schema("", f.fields)) if f.type == "object" else [f])]


def _all_fields(fields):
    for f in fields:
        yield f
        yield from _all_fields(f.fields)


def check_fits(schema: Schema, vocab: Vocab) -> None:
    """Every slot can hold a value of its type within its budget, in characters the vocabulary has; a
    one-line error names the field and what to change."""
    for what, text in [("tool name", schema.tool)] + [("property name", f.name) for f in _all_fields(schema.fields)]:
        if bad := vocab.unknown(json_text(text)):
            raise UsageError(f"{schema.tool}: the {what} {text!r} holds characters outside the model's vocabulary: "
                             f"{', '.join(map(repr, bad[:10]))}")
    for f in slot_fields(schema):
        if f.type == "enum" and (bad := vocab.unknown("".join(f.slot_text(v) for v in f.enum))):
            raise CdtError(f"the enum of {f.name!r} holds characters outside the model's vocabulary: "
                           f"{', '.join(map(repr, bad[:10]))}")
        table = compile_language(slot_language(f), vocab)
        if table.shortest >= 10**9:
            raise UsageError(f"{schema.tool}: no value of {f.name!r} can be written in this model's characters")
        if table.shortest > f.slot:
            raise UsageError(f"{schema.tool}: the slot of {f.name!r} has {f.slot} positions and its shortest "
                             f"value needs {table.shortest}; raise it with --budget {f.name}={table.shortest}")


def template(schema: Schema | list[Schema], vocab: Vocab, prompts: list[str], separator: str, block_size: int):
    """(ids, protected) rows: each prompt + separator (protected), then the scaffold with masked slots,
    right-padded with [PAD] to the longest row. `schema`: one for every row, or a list with one per row."""
    schemas = schema if isinstance(schema, list) else [schema] * len(prompts)
    bodies = {}
    for s in schemas:
        if id(s) not in bodies:  # by schema, not name: two requests may offer different tools of one name
            check_fits(s, vocab)
            bodies[id(s)] = render(s, vocab)
    rows = []
    for p, s in zip(prompts, schemas):
        head = vocab.encode(p + separator)
        body, slots = bodies[id(s)]
        if len(head) + len(body) > block_size:
            big = max(slot_fields(s), key=lambda f: f.slot)
            raise UsageError(f"prompt ({len(head)} positions) plus the {s.tool} scaffold ({len(body)}) exceeds "
                             f"the model's block size {block_size}; shorten the request or lower slot budgets "
                             f"(the largest: {big.name!r}, {big.slot} positions; --budget {big.name}=N)")
        rows.append((head + body, [True] * len(head) + [not x for x in slots]))
    return padded(rows)


def padded(rows: list[tuple[list[int], list[bool]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, protected) of rows given as (ids, protected) lists, right-padded with protected [PAD]."""
    width = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    protected = torch.ones((len(rows), width), dtype=torch.bool)
    for i, (r, p) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        protected[i, : len(p)] = torch.tensor(p)
    return ids, protected


class SlotConstraint:
    """Keeps every slot of scaffolded rows in its type's language while they are generated: called on each
    step's fill, it refills every slot that still has masked positions with the most probable (temperature
    0) or a sampled completion its automaton accepts, keeping the positions already committed. So what a
    slot holds always stays completable, and the final row holds a valid value in every slot.
    `slots[i]`: [(where the slot starts, its field)] of row i (`of` builds them from schemas)."""

    def __init__(self, slots: list[list[tuple[int, Field]]], vocab: Vocab):
        self.slots, self.vocab = slots, vocab
        self.groups: dict[int, tuple] = {}  # id(table) -> (table, [(row, slot start, slot size)])
        for i, row in enumerate(slots):
            for start, f in row:
                table = compile_language(slot_language(f), vocab)
                self.groups.setdefault(id(table), (table, []))[1].append((i, start, f.slot))

    @classmethod
    def of(cls, rows: list[tuple[Schema, int]], vocab: Vocab) -> SlotConstraint:
        """The constraint of rows whose scaffold of schema s begins at `start`: [(s, start)] per row."""
        layouts = {}
        for schema, _ in rows:
            if id(schema) not in layouts:  # by schema, not name (see `template`)
                check_fits(schema, vocab)
                _, slots = render(schema, vocab)
                starts = [j for j, x in enumerate(slots) if x and (j == 0 or not slots[j - 1])]
                layouts[id(schema)] = list(zip(starts, slot_fields(schema)))
        return cls([[(start + j, f) for j, f in layouts[id(schema)]] for schema, start in rows], vocab)

    def take(self, rows: torch.Tensor) -> SlotConstraint:
        """The constraint of rows `rows` (indices into this one's rows), in that order."""
        return SlotConstraint([self.slots[int(i)] for i in rows], self.vocab)

    def __call__(self, x: torch.Tensor, logits: torch.Tensor, filled: torch.Tensor,
                 uniforms: torch.Tensor | None) -> torch.Tensor:
        """`filled` with every open slot refilled. x: the rows entering the step; logits (b, n, v) as the
        sampler filtered them (-inf: refused, used only where nothing else fits); uniforms (b, n): one draw
        per position to sample with, or None for the most probable completion."""
        out = filled.clone()
        n = x.shape[1]
        for table, places in self.groups.values():  # one decoder call per language: slots of every size
            row, start, size = (torch.tensor(c, device=x.device) for c in zip(*places))
            width = int(size.max())
            pos = start[:, None] + torch.arange(width, device=x.device)
            pad = pos >= (start + size)[:, None]  # past a shorter slot's end: [NULL], which keeps it as it ends
            pos = pos.clamp_max(n - 1)
            current = x[row[:, None], pos].masked_fill(pad, NULL_ID)
            open_ = (current == MASK_ID).any(dim=1)
            if not open_.any():
                continue
            row, pos, pad, current = row[open_], pos[open_], pad[open_], current[open_]
            fixed = torch.where(current == MASK_ID, -1, current)
            slot_logits = logits[row[:, None], pos]
            logp = torch.where(torch.isfinite(slot_logits), slot_logits, -1e4).log_softmax(-1)
            u = None if uniforms is None else uniforms[row[:, None], pos]
            out[row[:, None], pos] = torch.where(pad, out[row[:, None], pos], fill(logp, fixed, table, u))
        return out


# training rows


def record_schema(record) -> Schema:
    """The schema of a record's tool: its own (the functions corpus) or a built-in toolcalls tool."""
    return record.schema if record.schema is not None else builtin(record.tool)


def record_row(record, vocab: Vocab) -> tuple[list[int], list[bool]]:
    """A toolcalls record as a training row: request + separator, then its answer in the scaffold
    layout; maskable = the value slots."""
    from cdt.data import SEPARATOR

    head = vocab.encode(record.prompt + SEPARATOR)
    body, slots = render(record_schema(record), vocab, record.arguments)
    return head + body, [False] * len(head) + slots


def record_rows(records: list, vocab: Vocab, block_size: int, names: bool = False):
    """`record_row` of every record, right-padded with [PAD] to the block size (a `cdt.data.Rows`); names:
    also a `name_row` for each record offered several tools (training teaches the choice of tool)."""
    from cdt.data import SEPARATOR, Rows

    rows = [record_row(r, vocab) for r in records]
    rows += [name_row(r.prompt, Field("name", "enum", r.offered), SEPARATOR, vocab, r.tool)
             for r in records if names and len(r.offered) > 1]
    ids = np.full((len(rows), block_size), PAD_ID, dtype=np.int32)
    maskable = np.zeros((len(rows), block_size), dtype=bool)
    for i, (row, slots) in enumerate(rows):
        ids[i, : len(row)] = row
        maskable[i, : len(row)] = slots
    return Rows(ids, maskable)


NAME_HEAD, NAME_TAIL = '{"name": "', '", "arguments": {'  # around the tool's name


def name_offset(vocab) -> int:
    """Where the tool-name slot starts after the request and separator, in positions."""
    return len(vocab.encode(NAME_HEAD))


def name_row(prompt: str, name: Field, separator: str, vocab: Vocab, value: str | None = None):
    """(ids, slot) of a row that ends after the tool-name slot, `{"name": "` + slot + `", "arguments": {`:
    the slot masked (value None: the first of two passes when several tools are offered) or holding
    `value` padded with [NULL] (training rows that teach the choice)."""
    head = vocab.encode(prompt + separator) + vocab.encode(NAME_HEAD)
    slot = [MASK_ID] * name.slot if value is None else _slot_ids(vocab, name, value)
    tail = vocab.encode(NAME_TAIL)
    return head + slot + tail, [False] * len(head) + [True] * name.slot + [False] * len(tail)
