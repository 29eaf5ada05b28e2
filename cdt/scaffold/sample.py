"""`cdt sample --schema`: fill a scaffold's value slots after each request; only slot positions change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from cdt import calibration_map, checkpoint
from cdt.data import SEPARATOR
from cdt.device import pick_device
from cdt.sampling.loop import Generation, generate
from cdt.scaffold.layout import SlotConstraint, padded, slot_fields, template
from cdt.scaffold.schema import Field, Schema, json_text
from cdt.scaffold.validate import parse
from cdt.settings import SampleConfig
from cdt.vocab import MASK_ID, Vocab


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
    separator = SEPARATOR if ckpt.extra.get("mask_region") == "answer" else ""
    vocab, block = ckpt.vocab, ckpt.config.model.block_size
    template(tools, vocab, [prompts[0]] * len(tools), separator, block)  # every tool fits, before the model
    cfg, notice = cfg.for_checkpoint(ckpt).capped(max(sum(f.slot for f in slot_fields(t)) for t in tools))
    warnings = [notice] if notice else []
    warnings += [] if ckpt.config.data.scaffold else [
        f"{ckpt.path} was trained without scaffolds: it has not learned the slot layout or to end a value with "
        "[NULL], so expect filled-up slots; train one with cdt train --scaffold"]
    model = ckpt.build_model(pick_device(device))
    calibration, warning = calibration_map.for_sampler(ckpt.path.parent, cfg)
    warnings += [warning] if warning else []
    starts = [len(vocab.encode(p + separator)) for p in prompts]
    passes = {"generator": 0, "critic": 0}
    chosen = [tools[0]] * len(prompts)
    if len(tools) > 1:
        name = Field("name", "enum", tuple(t.tool for t in tools))
        ids, protected = name_template(name, vocab, prompts, separator)
        gen = generate(model, ids, protected, cfg, allow_null=True, calibration=calibration,
                       constraint=SlotConstraint([[(s + NAME_OFFSET, name)] for s in starts], vocab))
        by_name = {t.tool: t for t in tools}
        chosen = [by_name[vocab.decode(row[s + NAME_OFFSET : s + NAME_OFFSET + name.slot])]
                  for row, s in zip(gen.tokens, starts)]
        passes = dict(gen.passes)
    ids, protected = template(chosen, vocab, prompts, separator, block)
    gen = generate(model, ids, protected, cfg, record=record, allow_null=True, calibration=calibration,
                   constraint=SlotConstraint.of(list(zip(chosen, starts)), vocab))
    gen.passes = {k: gen.passes[k] + passes[k] for k in gen.passes}
    out = []
    for row, prompt, start in zip(gen.tokens, prompts, starts):
        text = vocab.decode(row[start:])  # [PAD] and [NULL] dropped
        parsed = parse(tools, text)
        if parsed.call is not None:  # the canonical form: an empty optional slot printed as null
            text = json_text(parsed.call)
        out.append(ScaffoldSample(prompt, text, parsed.call, parsed.valid, parsed.errors, start))
    return ScaffoldResult(str(ckpt.path), tools[0], cfg, out, gen, warnings, vocab, tools)


NAME_OFFSET = len('{"name": "')  # where the tool-name slot starts after the request


def name_template(name: Field, vocab: Vocab, prompts: list[str], separator: str):
    """Rows that end after the tool-name slot, `{"name": "` + slot + `", "arguments": {`: the first of two
    passes when several tools are given (the second scaffolds the arguments of the tool each row chose)."""
    rows = [vocab.encode(p + separator + '{"name": "') + [MASK_ID] * name.slot + vocab.encode('", "arguments": {')
            for p in prompts]
    return padded([(r, [t != MASK_ID for t in r]) for r in rows])
