"""`cdt sample --schema`: fill a scaffold's value slots after each request; only slot positions change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cdt import calibration_map, checkpoint
from cdt.data import SEPARATOR
from cdt.data.functions import with_tools
from cdt.device import pick_device
from cdt.sampling.loop import Generation, generate
from cdt.scaffold.layout import SlotConstraint, name_offset, name_row, padded, slot_fields, template
from cdt.scaffold.schema import Field, Schema, json_text
from cdt.scaffold.validate import Parsed, parse
from cdt.settings import SampleConfig
from cdt.vocab import Vocab


@dataclass
class ScaffoldSample:
    prompt: str
    text: str  # the generated call, [NULL] stripped
    call: dict | None
    valid: bool
    errors: list[str]
    start: int  # where the scaffold begins in the row (after the prompt and separator)

    def to_json(self) -> dict:
        return {"prompt": self.prompt, "text": self.text, "call": self.call, "valid": self.valid,
                "errors": self.errors}


@dataclass
class ScaffoldResult:
    checkpoint: str
    schema: Schema  # the first tool (the only one unless several were given)
    config: SampleConfig  # as run: the checkpoint's defaults filled in
    samples: list[ScaffoldSample]  # one per prompt, in order
    generation: Generation  # the whole batch: one row per prompt
    warnings: list[str]
    vocab: Vocab  # to show the trajectory
    tools: list[Schema] | None = None  # every tool given

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "schema": self.schema.tool,
                "tools": [t.tool for t in self.tools or [self.schema]], "config": self.config.to_dict(),
                "passes": self.generation.passes, "samples": [s.to_json() for s in self.samples]}


def sample_schema(source: str | Path | checkpoint.Checkpoint, schema: Schema | list[Schema], prompts: list[str],
                  cfg: SampleConfig, device: str = "auto", record: bool = False) -> ScaffoldResult:
    """One scaffolded call per prompt, in one batch, each validated against the schema. Every slot is
    generated under its type's language, so every call parses and validates. With several tools the
    tool's name is a slot of its own, constrained to their names, filled first; each row's arguments then
    follow the tool it chose."""
    tools = [schema] if isinstance(schema, Schema) else list(schema)
    ckpt = checkpoint.load(source)
    separator = separator_of(ckpt)
    template(tools, ckpt.vocab, [prompts[0]] * len(tools), separator, ckpt.config.model.block_size)  # all fit
    cfg, notice = cfg.for_checkpoint(ckpt).capped(max(sum(f.slot for f in slot_fields(t)) for t in tools))
    warnings = [notice] if notice else []
    warnings += [] if ckpt.config.data.scaffold else [
        f"{ckpt.path} was trained without scaffolds: it has not learned the slot layout or to end a value with "
        "[NULL], so expect filled-up slots; train one with cdt train --preset functions (any schema) or cdt train "
        "--scaffold (the built-in tools)"]
    model = ckpt.build_model(pick_device(device))
    calibration, warning = calibration_map.for_sampler(ckpt.path.parent, cfg)
    warnings += [warning] if warning else []
    calls = fill_calls(model, ckpt.vocab, [(p, tools) for p in prompts], cfg, separator,
                       ckpt.config.model.block_size, calibration, record, lists_tools(ckpt))
    out = [ScaffoldSample(p, c.text, c.parsed.call, c.parsed.valid, c.parsed.errors, c.start)
           for p, c in zip(prompts, calls.calls)]
    return ScaffoldResult(str(ckpt.path), tools[0], cfg, out, calls.generation, warnings, ckpt.vocab, tools)


def lists_tools(ckpt: checkpoint.Checkpoint) -> bool:
    """Whether the model was trained to read the offered tools' names after a request (the functions corpus)."""
    return ckpt.config.data.source == "functions"


def separator_of(ckpt: checkpoint.Checkpoint) -> str:
    """What follows a request in the checkpoint's rows (nothing for a model trained on plain text)."""
    return SEPARATOR if ckpt.extra.get("mask_region") == "answer" else ""


@dataclass
class Call:
    tool: Schema  # the tool the row chose (the only one offered, or the name slot's choice)
    text: str  # the generated call, [NULL] stripped, in canonical form when it parses
    parsed: Parsed
    start: int  # where the scaffold begins in the row


@dataclass
class Calls:
    calls: list[Call]
    generation: Generation  # the arguments pass, one row per request; passes count both passes
    filled: torch.Tensor  # (b, n) bool: the slot positions the arguments pass filled


def fill_calls(model, vocab: Vocab, rows: list[tuple[str, list[Schema]]], cfg: SampleConfig, separator: str,
               block_size: int, calibration=None, record: bool = False, list_tools: bool = False) -> Calls:
    """One call per (request, tools offered) row, in one batch: rows offered several tools first fill a
    name slot constrained to their names, then every row's arguments follow its tool's scaffold.
    list_tools: the request names the tools offered (`functions.with_tools`), as the functions corpus
    trains a model to read it."""
    prompts = [with_tools(p, [t.tool for t in tools]) if list_tools else p for p, tools in rows]
    starts = [len(vocab.encode(p + separator)) for p in prompts]
    chosen = [tools[0] for _, tools in rows]
    passes = {"generator": 0, "critic": 0}
    choosing = [i for i, (_, tools) in enumerate(rows) if len(tools) > 1]
    if choosing:
        names = [Field("name", "enum", tuple(t.tool for t in rows[i][1])) for i in choosing]
        ids, protected = padded([(r, [not x for x in slot]) for r, slot in
                                 (name_row(prompts[i], name, separator, vocab) for i, name in zip(choosing, names))])
        offset = name_offset(vocab)
        slots = [[(starts[i] + offset, name)] for i, name in zip(choosing, names)]
        gen = generate(model, ids, protected, cfg, allow_null=True, calibration=calibration,
                       constraint=SlotConstraint(slots, vocab))
        for row, i, name in zip(gen.tokens, choosing, names):
            at = starts[i] + offset
            picked = vocab.decode(row[at : at + name.slot])
            chosen[i] = next(t for t in rows[i][1] if t.tool == picked)
        passes = dict(gen.passes)
    ids, protected = template(chosen, vocab, prompts, separator, block_size)
    gen = generate(model, ids, protected, cfg, record=record, allow_null=True, calibration=calibration,
                   constraint=SlotConstraint.of(list(zip(chosen, starts)), vocab))
    gen.passes = {k: gen.passes[k] + passes[k] for k in gen.passes}
    calls = []
    for row, (_, tools), tool, start in zip(gen.tokens, rows, chosen, starts):
        text = vocab.decode(row[start:])  # [PAD] and [NULL] dropped
        parsed = parse(tools, text)
        if parsed.call is not None:  # the canonical form: an empty optional slot printed as null
            text = json_text(parsed.call)
        calls.append(Call(tool, text, parsed, start))
    return Calls(calls, gen, ~protected)
