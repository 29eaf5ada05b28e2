"""`cdt sample` as a library call: checkpoint + prompts -> generated text and critic probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

from cdt import calibration_map
from cdt.checkpoint import Checkpoint
from cdt.sampling.loop import Generation, SampleConfig, final_critic_probs, generate
from cdt.sampling.template import prompt_template
from cdt.device import pick_device
from cdt.errors import CdtError
from cdt.vocab import NULL_ID


@dataclass
class SampleResult:
    prompt: str
    texts: list[str]  # the generated region of each row
    region: tuple[int, int]  # [start, end) of the generated region in every row
    critic_probs: list[list[float]] | None  # per row, per generated character ([NULL] dropped, as in texts)
    generation: Generation
    report_passes: int  # an extra critic pass for the output, when the policy did not run the critic
    warnings: list[str]


def sample_each(ckpt: Checkpoint, prompts: list[str], length: int, n: int, cfg: SampleConfig,
                device: str = "auto", record: bool = False) -> Iterator[SampleResult]:
    """`n` rows of `length` after each prompt, one prompt at a time, each exactly as a run with that prompt
    alone gives it (same seeds, same rows). Every prompt is checked (vocabulary, block size) before the first
    is generated; an error names the prompt by its number when there are several."""
    separator = ckpt.extra.get("mask_region") == "answer"  # trained as request + separator + answer
    templates = []
    for i, prompt in enumerate(prompts):
        try:
            templates.append(prompt_template(ckpt.vocab, prompt, length, ckpt.config.model.block_size, n, separator))
        except CdtError as e:
            if len(prompts) > 1:
                e.args = (f"request {i + 1}: {e}",)
            raise
    model = ckpt.build_model(pick_device(device))
    calibration, warning = calibration_map.for_policy(ckpt.path.parent, cfg.policy, calibration_map.sampler_info(cfg))
    for prompt, (ids, protected) in zip(prompts, templates):
        gen = generate(model, ids, protected, cfg, record=record, calibration=calibration,
                       allow_null=ckpt.config.data.emits_null)  # a tail model ends its answer with [NULL]
        start, end = int(protected[0].sum()), ids.shape[1]
        probs, extra = final_critic_probs(model, gen)
        yield SampleResult(
            prompt=prompt,
            texts=[ckpt.vocab.decode(row[start:end]) for row in gen.tokens],
            region=(start, end),
            critic_probs=None if probs is None else [p[row != NULL_ID].tolist() for p, row in
                                                     zip(probs[:, start:end], gen.tokens[:, start:end])],
            generation=gen,
            report_passes=extra,
            warnings=[warning] if warning else [],
        )


@dataclass
class ScaffoldSample:
    prompt: str
    text: str  # the generated call, [NULL] stripped
    call: dict | None
    valid: bool
    errors: list[str]
    start: int  # where the scaffold begins in the row (after the prompt and separator)


@dataclass
class ScaffoldResult:
    samples: list[ScaffoldSample]  # one per prompt, in order
    generation: Generation  # the whole batch: one row per prompt
    warnings: list[str]


def sample_schema(ckpt: Checkpoint, schema, prompts: list[str], cfg: SampleConfig, device: str = "auto",
                  record: bool = False) -> ScaffoldResult:
    """Fill the value slots of `schema`'s scaffold after each prompt; only slot positions change."""
    from cdt import scaffold
    from cdt.data import SEPARATOR

    model = ckpt.build_model(pick_device(device))
    separator = SEPARATOR if ckpt.extra.get("mask_region") == "answer" else ""
    ids, protected = scaffold.template(schema, ckpt.vocab, prompts, separator, ckpt.config.model.block_size)
    calibration, warning = calibration_map.for_policy(ckpt.path.parent, cfg.policy, calibration_map.sampler_info(cfg))
    starts = [len(ckpt.vocab.encode(p + separator)) for p in prompts]
    allowed = scaffold.allowed_rows([schema] * len(prompts), starts, ids.shape[1], ckpt.vocab)
    gen = generate(model, ids, protected, cfg, record=record, allow_null=True, calibration=calibration,
                   allowed_at=allowed)
    out = []
    for row, prompt, start in zip(gen.tokens, prompts, starts):
        text = ckpt.vocab.decode(row[start:])  # [PAD] and [NULL] dropped
        parsed = scaffold.parse(schema, text)
        if parsed.call is not None:  # the canonical form: an empty optional slot printed as null
            text = json.dumps(parsed.call, ensure_ascii=False)
        out.append(ScaffoldSample(prompt, text, parsed.call, parsed.valid, parsed.errors, start))
    return ScaffoldResult(out, gen, [warning] if warning else [])
