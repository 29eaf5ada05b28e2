"""The two-pass step: corrupt, generator pass, fill through `build_critic_artifacts`, critic pass.

Training runs it with gradients (`TrainStep`), validation without; `one_step` shows
held-out rows as training sees them (`cdt calibrate --mode step`, `cdt explore --mode
step`). One function, so every view of the critic judges inputs built the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cdt.artifacts import CriticArtifacts, build_critic_artifacts, partly_masked, with_rows
from cdt.config import TrainConfig
from cdt.data import Batch
from cdt.device import autocast
from cdt.losses import critic_bce, diffusion_nelbo
from cdt.model import DiffusionLM
from cdt.noise import EPS, Schedule, corrupt, get_schedule, span_like
from cdt.rng import RowGenerators, fork
from cdt.vocab import MASK_ID, PAD_ID


@dataclass
class StepOutput:
    gen_loss: torch.Tensor
    critic_loss: torch.Tensor | None
    noisy: torch.Tensor  # (b, n)
    masked: torch.Tensor  # (b, n) bool
    maskable: torch.Tensor  # (b, n) bool
    logits: torch.Tensor  # (b, n, v)
    artifacts: CriticArtifacts | None  # of the rows the critic's pass took (all but with critic_rows)
    critic_logits: torch.Tensor | None  # (rows, n)


def diffusion_step(model: DiffusionLM, batch: Batch, t: torch.Tensor, schedule: Schedule, cfg: TrainConfig,
                   region: str, generator: torch.Generator, device: torch.device,
                   allow_null: bool = False, critic: bool = True, critic_rows: int = 0) -> StepOutput:
    """Corrupt, generator pass, fill via build_critic_artifacts, critic pass (critic=False: the generator alone).

    critic_rows > 0: the fill and the critic's pass take only that many rows of the batch, evenly
    spaced (training's `train.critic_rows`); the generator's loss still takes every row."""
    clean = batch.ids.to(device, non_blocking=True)
    maskable = batch.maskable.to(device, non_blocking=True) if region == "answer" else clean != PAD_ID
    noisy, masked = corrupt(clean, maskable, t, schedule, generator)
    with autocast(device):
        logits = model.generator_logits(model(noisy), noisy)
    if cfg.loss_weighting == "flat":  # every masked token counts the same, whatever its t
        gen_loss = diffusion_nelbo(logits, clean, masked, torch.ones_like(t), masked.sum())
    else:
        gen_loss = diffusion_nelbo(logits, clean, masked, schedule.weight(t), maskable.sum())
    if not model.has_critic or not critic:
        return StepOutput(gen_loss, None, noisy, masked, maskable, logits, None, None)
    c_noisy, c_logits, c_clean, c_maskable = noisy, logits.detach(), clean, maskable
    if 0 < critic_rows < len(clean):  # every (b / critic_rows)-th row: the critic sees every stratum of t
        rows = torch.arange(critic_rows, device=clean.device) * len(clean) // critic_rows
        c_noisy, c_logits, c_clean, c_maskable = noisy[rows], c_logits[rows], clean[rows], maskable[rows]
    art = build_critic_artifacts(c_noisy, c_logits, c_clean, temperature=cfg.fill_temperature,
                                 scope=cfg.critic_scope, allow_null=allow_null, generator=generator)
    rows = spaced_rows(cfg.rollout_share, len(c_clean), c_clean.device)
    if len(rows):  # these rows show the critic what sampling will: a few confidence steps instead of one fill
        draws, start = row_draws(generator, rows, 2), c_noisy[rows].clone()
        spans = spaced_rows(cfg.rollout_span, len(rows), c_clean.device)
        if len(spans):  # the same count masked as one contiguous run, as infilling a span or a continuation
            at = rows[spans]
            u = row_draws(fork(generator, salt=1), at, 1)[:, 0]  # a fork: other draws stay as they were
            start[spans] = c_clean[at].masked_fill(span_like(start[spans], c_maskable[at], u), MASK_ID)
        tokens = rollout(model, start, cfg.rollout_steps, draws, allow_null)
        art = with_rows(art, rows, tokens, c_clean, filled=start == MASK_ID if len(spans) else None)
    rows = len(c_clean) - 1 - spaced_rows(cfg.onepass_share, len(c_clean), c_clean.device)  # from the last row up
    if len(rows):  # the one-pass critic's state: the least confident fills masked again, a share U(0, 1) per row;
        # drawn from a fork, so the option leaves every other draw (and validation's masks) as they were
        confidence = c_logits[rows].float().softmax(-1).gather(-1, art.critic_input[rows][..., None]).squeeze(-1)
        art = partly_masked(art, rows, 1.0 - confidence, row_draws(fork(generator), rows, 1)[:, 0])
    with autocast(device):
        critic_logits = model.critic_logits(model(art.critic_input)).float()
    return StepOutput(gen_loss, critic_bce(critic_logits, art.critic_target, art.critic_valid), noisy, masked,
                      maskable, logits, art, critic_logits)


def spaced_rows(share: float, b: int, device) -> torch.Tensor:
    """The round(share x b) rows of a batch of b, evenly spaced from row 0 (every stratum of t)."""
    k = round(share * b)
    return torch.arange(k, device=device) * b // max(k, 1)


def row_draws(generator: torch.Generator | RowGenerators, rows: torch.Tensor, count: int) -> torch.Tensor:
    """(len(rows), count) float64 uniforms for `rows`; per-row generators draw every row's own, so a row's
    draws do not depend on the others."""
    if isinstance(generator, RowGenerators):
        return generator.uniform((count,), torch.float64)[rows.cpu()]
    return torch.rand((len(rows), count), generator=generator, dtype=torch.float64)


@torch.no_grad()
def rollout(model: DiffusionLM, noisy: torch.Tensor, max_steps: int, draws: torch.Tensor,
            allow_null: bool) -> torch.Tensor:
    """Fill the [MASK] positions of `noisy` (b, n) as `cdt sample` would, in 1..max_steps confidence steps,
    without gradients; the model's mode is kept. `draws` (b, 2) uniforms: the first row's first sets the
    step count, each row's second its sampling seed."""
    from cdt.sampling.loop import generate
    from cdt.settings import SampleConfig

    steps = 1 + min(int(draws[0, 0] * max_steps), max_steps - 1)
    seeds = (draws[:, 1] * (1 << 53)).long().tolist()
    was_training = model.training
    try:
        out = generate(model, noisy, noisy != MASK_ID, SampleConfig(steps=steps), row_seeds=seeds,
                       allow_null=allow_null)
    finally:
        model.train(was_training)
    return out.tokens.to(noisy.device)


class TrainStep(torch.nn.Module):
    """One training step's forward: `diffusion_step` and the weighted loss.

    Both trunk passes run inside this one forward, so DistributedDataParallel sees one
    forward per backward and syncs each parameter's summed gradient once."""

    def __init__(self, model: DiffusionLM):
        super().__init__()
        self.model = model

    def forward(self, batch, t, schedule, tc, region, gen, device, allow_null, alpha, critic=True):
        out = diffusion_step(self.model, batch, t, schedule, tc, region, gen, device, allow_null, critic,
                             tc.critic_rows)
        loss = out.gen_loss if out.critic_loss is None else out.gen_loss + alpha * out.critic_loss
        return loss, out


@torch.no_grad()
def one_step(model: DiffusionLM, clean: torch.Tensor, region: torch.Tensor, seeds: list[int], ckpt, device):
    """The training step's view of held-out rows: corrupt each row's region at a seeded t ~ U(0, 1),
    one generator pass, the fill, one critic pass (no loss).
    Returns (filled rows, critic P(wrong), critic_valid, the positions the corruption masked)."""
    t = torch.tensor([float(np.random.default_rng(s).uniform(EPS, 1.0)) for s in seeds])  # t ~ U(0, 1) per row
    out = diffusion_step(model, Batch(clean, region), t, get_schedule(ckpt.config.train.noise_schedule),
                         ckpt.config.train, "answer", RowGenerators(seeds), device, ckpt.config.data.emits_null)
    art = out.artifacts
    probs = torch.sigmoid(out.critic_logits).cpu()
    return art.critic_input.cpu(), probs, art.critic_valid.cpu(), art.filled.cpu()
