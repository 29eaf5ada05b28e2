"""`cdt sample --schema`: fill a scaffold's value slots after each request; only slot positions change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cdt import calibration_map, checkpoint
from cdt.data import SEPARATOR
from cdt.device import pick_device
from cdt.sampling.loop import Generation, generate
from cdt.scaffold.layout import allowed_rows, template
from cdt.scaffold.schema import Schema, parse
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
    schema: Schema
    config: SampleConfig  # as run: the checkpoint's defaults filled in
    samples: list[ScaffoldSample]  # one per prompt, in order
    generation: Generation  # the whole batch: one row per prompt
    warnings: list[str]
    vocab: Vocab  # to show the trajectory

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "schema": self.schema.tool, "config": self.config.to_dict(),
                "passes": self.generation.passes, "samples": [s.to_json() for s in self.samples]}


def sample_schema(source: str | Path | checkpoint.Checkpoint, schema: Schema, prompts: list[str], cfg: SampleConfig,
                  device: str = "auto", record: bool = False) -> ScaffoldResult:
    """One scaffolded call per prompt, in one batch, each validated against the schema."""
    ckpt = checkpoint.load(source)
    separator = SEPARATOR if ckpt.extra.get("mask_region") == "answer" else ""
    ids, protected = template(schema, ckpt.vocab, prompts, separator, ckpt.config.model.block_size)
    cfg, notice = cfg.for_checkpoint(ckpt).capped(sum(f.slot for f in schema.fields))
    warnings = [notice] if notice else []
    warnings += [] if ckpt.config.data.scaffold else [
        f"{ckpt.path} was trained without scaffolds: it has not learned the slot layout or to end a value with "
        "[NULL], so expect filled-up slots; train one with cdt train --scaffold"]
    model = ckpt.build_model(pick_device(device))
    calibration, warning = calibration_map.for_sampler(ckpt.path.parent, cfg)
    warnings += [warning] if warning else []
    starts = [len(ckpt.vocab.encode(p + separator)) for p in prompts]
    allowed = allowed_rows([schema] * len(prompts), starts, ids.shape[1], ckpt.vocab)
    gen = generate(model, ids, protected, cfg, record=record, allow_null=True, calibration=calibration,
                   allowed_at=allowed)
    out = []
    for row, prompt, start in zip(gen.tokens, prompts, starts):
        text = ckpt.vocab.decode(row[start:])  # [PAD] and [NULL] dropped
        parsed = parse(schema, text)
        if parsed.call is not None:  # the canonical form: an empty optional slot printed as null
            text = json.dumps(parsed.call, ensure_ascii=False)
        out.append(ScaffoldSample(prompt, text, parsed.call, parsed.valid, parsed.errors, start))
    return ScaffoldResult(str(ckpt.path), schema, cfg, out, gen, warnings, ckpt.vocab)
