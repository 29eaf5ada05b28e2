"""Remasking policies: one signature, registered by name.

A policy scores every position of the filled row; a higher score means "worse, remask
it first". Scores live in [0, 1] so `--randomness` can blend them with uniform noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from cdt.errors import UsageError
from cdt.rng import RowGenerators


@dataclass
class ScoreContext:
    probs: torch.Tensor  # (b, n, v) generator distribution after temperature/top-k/top-p
    tokens: torch.Tensor  # (b, n) the filled row
    critic_logits: torch.Tensor | None  # (b, n), present when the policy needs the critic
    generator: RowGenerators
    calibration: Callable | None = None  # critic probability -> observed error rate (`cdt calibrate`)
    newly: torch.Tensor | None = None  # (b, n) bool, positions sampled at this step
    state: dict = field(default_factory=dict)  # kept across the steps of one generation (stateful policies)
    lock_threshold: float = 0.9  # rcr: a position locks once its best confidence reaches this


@dataclass(frozen=True)
class Policy:
    name: str
    score: Callable[[ScoreContext], torch.Tensor]  # -> (b, n) in [0, 1], higher = remask first
    needs_critic: bool = False
    help: str = ""
    stateful: bool = False  # keeps its own memory in ctx.state; may lock positions via ctx.state["locked"]
    one_pass: bool = False  # reads the critic from the generator's own pass (no second trunk pass)


def _token_p(ctx):
    """(b, n) the generator's probability of each token of the filled row."""
    return ctx.probs.gather(-1, ctx.tokens[..., None]).squeeze(-1)


def _confidence(ctx):
    return 1.0 - _token_p(ctx)


def _margin(ctx):
    top2 = ctx.probs.topk(2, dim=-1).values
    return 1.0 - (top2[..., 0] - top2[..., 1])


def _entropy(ctx):
    p = ctx.probs.clamp_min(1e-12)
    h = -(p * p.log()).sum(-1)
    return h / torch.log(torch.tensor(float(p.shape[-1])))  # normalised to [0, 1]


def _random(ctx):
    return ctx.generator.uniform(ctx.tokens.shape[1:]).to(ctx.tokens.device)


def _rcr(ctx):
    """Running-confidence remasking: each position keeps the highest confidence it has reached;
    once that passes the lock threshold it is final, below it it may be remasked."""
    conf = _token_p(ctx)
    best = ctx.state.get("best", torch.zeros_like(conf))
    best = torch.where(ctx.newly, torch.maximum(best, conf), best)
    ctx.state["best"] = best
    ctx.state["locked"] = best >= ctx.lock_threshold
    return 1.0 - best


def _critic(ctx):
    return torch.sigmoid(ctx.critic_logits)


def _critic_confidence(ctx):
    """1 - P(right), with P(right) = the critic's P(right) x the generator's probability of the token
    when it was sampled (kept for committed tokens: the generator's output at a visible position says
    nothing about it)."""
    conf = _token_p(ctx)
    sampled = torch.where(ctx.newly, conf, ctx.state.get("sampled_confidence", conf))
    ctx.state["sampled_confidence"] = sampled
    return 1.0 - (1.0 - torch.sigmoid(ctx.critic_logits)) * sampled


def _critic_one_pass(ctx):
    """The critic read from the generator's pass on the partly masked row judges the tokens visible in it (the
    earlier steps' samples); a token sampled at this step has not been judged yet and scores 1 - p(token)."""
    return torch.where(ctx.newly, _confidence(ctx), torch.sigmoid(ctx.critic_logits))


def _critic_calibrated(ctx):
    p = torch.sigmoid(ctx.critic_logits)
    return ctx.calibration(p) if ctx.calibration is not None else p  # callers warn when the map is missing


POLICIES = {p.name: p for p in (
    Policy("random", _random, help="uniform scores: remask positions at random"),
    Policy("confidence", _confidence, help="1 - p(sampled token): remask what the generator doubts"),
    Policy("margin", _margin, help="1 - (p1 - p2): remask where the top two candidates are close"),
    Policy("entropy", _entropy, help="normalised entropy of the generator's distribution"),
    Policy("rcr", _rcr, stateful=True,
           help="running confidence: remask the lowest best-so-far confidence; lock at --lock-threshold"),
    Policy("critic", _critic, needs_critic=True,
           help="critic probability that the token is wrong (higher = more likely wrong)"),
    Policy("critic-1pass", _critic_one_pass, needs_critic=True, one_pass=True,
           help="one trunk pass per step: the critic read from the generator's pass judges the earlier steps' "
                "tokens (P(wrong)); this step's samples score 1 - p(token)"),
    Policy("critic-calibrated", _critic_calibrated, needs_critic=True,
           help="the critic probability through the map `cdt calibrate` wrote (observed error rate)"),
    Policy("critic-confidence", _critic_confidence, needs_critic=True, stateful=True,
           help="1 - critic P(right) x the generator's p of the token when sampled: both judges at once"),
)}


def get_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise UsageError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return POLICIES[name]
