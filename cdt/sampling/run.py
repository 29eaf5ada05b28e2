"""`cdt sample` as a library call: checkpoint + prompts -> generated text and critic probabilities."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cdt import calibration_map, checkpoint
from cdt.artifacts import CRITIC_POLARITY
from cdt.device import pick_device
from cdt.errors import CdtError
from cdt.sampling.loop import Generation, final_critic_probs, generate
from cdt.sampling.template import prompt_template
from cdt.settings import SampleConfig
from cdt.vocab import NULL_ID, Vocab


@dataclass
class SampleResult:
    checkpoint: str
    prompt: str
    config: SampleConfig  # as run: the checkpoint's defaults filled in
    texts: list[str]  # the generated region of each row
    region: tuple[int, int]  # [start, end) of the generated region in every row
    critic_probs: list[list[float]] | None  # per row, per generated character ([NULL] dropped, as in texts)
    generation: Generation
    report_passes: int  # an extra critic pass for the output, when the policy did not run the critic
    warnings: list[str]
    vocab: Vocab  # to show the trajectory

    def row_probs(self, row: int) -> list[float] | None:
        """Row `row`'s critic P(wrong) per character, rounded for JSON."""
        return None if self.critic_probs is None else [round(p, 5) for p in self.critic_probs[row]]

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "prompt": self.prompt, "config": self.config.to_dict(),
                "passes": self.generation.passes, "report_passes": self.report_passes,
                "critic_polarity": CRITIC_POLARITY,
                "samples": [{"row": i, "text": t, "critic_probs": self.row_probs(i)} for i, t in enumerate(self.texts)]}

    def lines(self, critic: bool) -> list[dict]:
        """One JSON line per row (`--prompts-file`); critic: with its critic probabilities."""
        return [{"prompt": self.prompt, "row": i, "text": t} | ({"critic_probs": self.row_probs(i)} if critic else {})
                for i, t in enumerate(self.texts)]


def sample_each(source: str | Path | checkpoint.Checkpoint, prompts: list[str], length: int, n: int,
                cfg: SampleConfig, device: str = "auto", record: bool = False) -> Iterator[SampleResult]:
    """`n` rows of `length` after each prompt, one prompt at a time, each exactly as a run with that prompt
    alone gives it (same seeds, same rows). Every prompt is checked (vocabulary, block size) before the first
    is generated; an error names the prompt by its number when there are several."""
    ckpt = checkpoint.load(source)
    cfg, notice = cfg.for_checkpoint(ckpt).capped(length)
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
    calibration, warning = calibration_map.for_sampler(ckpt.path.parent, cfg)
    warnings = [w for w in (notice, warning) if w]
    for prompt, (ids, protected) in zip(prompts, templates):
        gen = generate(model, ids, protected, cfg, record=record, calibration=calibration,
                       allow_null=ckpt.config.data.emits_null)  # a tail model ends its answer with [NULL]
        start, end = int(protected[0].sum()), ids.shape[1]
        probs, extra = final_critic_probs(model, gen)
        yield SampleResult(
            checkpoint=str(ckpt.path),
            prompt=prompt,
            config=cfg,
            texts=[ckpt.vocab.decode(row[start:end]) for row in gen.tokens],
            region=(start, end),
            critic_probs=None if probs is None else [p[row != NULL_ID].tolist() for p, row in
                                                     zip(probs[:, start:end], gen.tokens[:, start:end])],
            generation=gen,
            report_passes=extra,
            warnings=warnings,
            vocab=ckpt.vocab,
        )


def read_requests(source: str) -> list[str]:
    """The non-blank lines of a prompts file ('-' = stdin), one request each."""
    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise CdtError(f"prompts file not found: {source}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CdtError(f"prompts file is not UTF-8 text: {source}") from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise CdtError(f"no requests in {source}")
    return prompts
