"""Generation by iterative unmasking, with only the trunk passes a policy needs.

Each step: generator pass on the current row (reused when the row has not changed
since the last pass, MDLM's cache trick) -> fill every [MASK] through
`build_critic_artifacts` -> critic pass on the filled row (critic policies only) ->
the policy scores positions -> the worst-scored ones are masked again.

Commit modes: `remask` (any generated position may be remasked later, ReMDM-style),
`lock` (a committed token is final, LLaDA-style), `threshold` (commit every new token
whose confidence clears a threshold, at least one per row and step, Fast-dLLM-style; with
`distrust` < 1, an earlier commit whose score rises above it is masked again, so a critic
that re-judges every step takes back what it no longer trusts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cdt.artifacts import build_critic_artifacts
from cdt.device import autocast
from cdt.errors import CdtError
from cdt.model import DiffusionLM
from cdt.rng import RowGenerators, seed_for
from cdt.sampling.policies import ScoreContext, get_policy
from cdt.settings import SampleConfig, schedule_fraction
from cdt.vocab import MASK_ID, emittable


@dataclass
class StepRecord:
    step: int
    filled: torch.Tensor  # (b, n) the row after the fill, before remasking
    scores: torch.Tensor  # (b, n) the policy's scores (higher = remask first)
    remasked: torch.Tensor  # (b, n) bool, positions masked again after this step
    critic_probs: torch.Tensor | None  # (b, n) when the critic ran (critic-1pass: on the row entering the step)
    masked_before: torch.Tensor  # (b, n) bool, positions that were [MASK] entering the step
    confidence: torch.Tensor  # (b, n) generator probability of each filled token (after filtering)


@dataclass
class Generation:
    tokens: torch.Tensor  # (b, n) final rows
    critic_probs: torch.Tensor | None  # (b, n) critic P(wrong) of the final rows, when the critic ran on them
    passes: dict  # trunk passes spent: {"generator": g, "critic": c}
    steps: list[StepRecord] = field(default_factory=list)
    row_passes: torch.Tensor | None = None  # (b,) the passes each row needed: those run while it had [MASK] left


# helpers


def masked_after(step: int, steps: int, total: torch.Tensor, schedule: str) -> torch.Tensor:
    """(b,) positions still masked after `step` of `steps` (1-based); 0 after the last step."""
    frac = schedule_fraction(schedule, min(step / steps, 1.0))
    return torch.floor(total.double() * max(frac, 0.0) + 1e-9).long()


def filter_logits(logits: torch.Tensor, cfg: SampleConfig, allowed: torch.Tensor) -> torch.Tensor:
    """Temperature, top-k, top-p and the emittable-id restriction on (b, n, v) logits (float32)."""
    x = logits.float().masked_fill(~allowed, float("-inf"))
    if cfg.temperature > 0:
        x = x / cfg.temperature
    if cfg.top_k > 0:
        kth = x.topk(min(cfg.top_k, x.shape[-1]), dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_x, order = x.sort(dim=-1, descending=True)
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop = cum - sorted_x.softmax(-1) >= cfg.top_p  # keep the smallest prefix reaching top_p
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return x


def spread_scores(scores: torch.Tensor, newly: torch.Tensor) -> torch.Tensor:
    """Defer every new token that is not the best-scored of its new neighbours, so one step does not commit
    two adjacent tokens that were sampled independently (each fill ignores the other's draw).

    A new token keeps its score when it scores strictly lower than its left new neighbour and no higher
    than its right one (a missing or committed neighbour never competes); the others are pushed behind
    every committed position."""
    inf = torch.full_like(scores[:, :1], float("inf"))
    own = scores.masked_fill(~newly, float("inf"))
    left = torch.cat([inf, own[:, :-1]], 1)
    right = torch.cat([own[:, 1:], inf], 1)
    best = newly & (own < left) & (own <= right)
    return torch.where(newly & ~best, scores + 1e3, scores)


def _block_index(editable: torch.Tensor, blocks: int) -> torch.Tensor:
    """(b, n) long: which of `blocks` left-to-right blocks of equal share each region position is in."""
    index = editable.long().cumsum(1) - 1  # the position's rank in its row's region
    total = editable.sum(1, keepdim=True).clamp_min(1)
    return index * blocks // total


def _block_steps(step: int, cfg: SampleConfig) -> tuple[int, int, int]:
    """(j, first, last): `step` (1-based) is in block j's turn, which runs steps first + 1 .. last. Block j
    gets the steps s with j * steps <= (s - 1) * blocks < (j + 1) * steps."""
    j = (step - 1) * cfg.blocks // cfg.steps
    return j, -(-j * cfg.steps // cfg.blocks), -(-(j + 1) * cfg.steps // cfg.blocks)


def later_blocks(editable: torch.Tensor, step: int, cfg: SampleConfig,
                 block: torch.Tensor | None = None) -> torch.Tensor:
    """(b, n) bool: editable positions in blocks whose turn comes after `step` (1-based); each row's region
    is cut into `cfg.blocks` left-to-right blocks of equal share, each with its share of the steps.
    `block`: `_block_index(editable, cfg.blocks)` when the caller has it (it does not change between steps)."""
    block = _block_index(editable, cfg.blocks) if block is None else block
    return editable & (block > _block_steps(step, cfg)[0])


def still_masked(step: int, cfg: SampleConfig, editable: torch.Tensor,
                 block: torch.Tensor | None = None) -> torch.Tensor:
    """(b,) region positions left masked after `step`: every position of a later block, and the share of the
    current block that the schedule, run over that block's own steps, leaves masked (without blocks: the
    schedule over the whole region)."""
    j, first, last = _block_steps(step, cfg)
    block = _block_index(editable, cfg.blocks) if block is None else block
    later = (editable & (block > j)).sum(1)
    return later + masked_after(step - first, last - first, (editable & (block == j)).sum(1), cfg.schedule)


def pick_worst(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor, cfg: SampleConfig,
               gens: RowGenerators) -> torch.Tensor:
    """(b, n) bool: per row, the k candidates to remask (highest score, or Gumbel-top-k sampled)."""
    keys = scores.double()
    if cfg.selection == "gumbel":  # sampling without replacement with probability proportional to score
        u = gens.uniform(scores.shape[1:], torch.float64).clamp(1e-300, 1 - 1e-16).to(keys.device)
        keys = keys.clamp_min(1e-12).log() - torch.log(-torch.log(u))
    keys = keys.masked_fill(~candidates, float("-inf"))
    rank = keys.argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < k[:, None]) & candidates


# the loop


@torch.no_grad()
def generate(model: DiffusionLM, ids: torch.Tensor, protected: torch.Tensor, cfg: SampleConfig,
             row_seeds: list[int] | None = None, record: bool = False, allow_null: bool = False,
             calibration=None, constraint=None) -> Generation:
    """Fill the [MASK] positions of `ids` (b, n); `protected` (b, n) positions never change.

    Row i draws its randomness from `row_seeds[i]` (default: seed_for(cfg.seed, i)), so the same
    seed gives the same rows and a row does not depend on what else is in its batch.
    `calibration` maps critic probabilities for the `critic-calibrated` policy. `constraint(x, logits,
    filled, uniforms)` rewrites each step's fill (scaffold slots: `cdt.scaffold.layout.SlotConstraint`
    keeps every slot in its type's language); uniforms are one draw per position, None at temperature 0.
    """
    if cfg.steps is None:
        raise ValueError("SampleConfig.steps is unresolved: call cfg.for_checkpoint(ckpt) first")
    cfg.validate()
    policy = get_policy(cfg.policy)
    if policy.needs_critic and not model.has_critic:
        raise CdtError(f"policy {cfg.policy!r} needs a critic, and this checkpoint was trained without one")
    model.eval()
    device = next(model.parameters()).device
    b, n = ids.shape
    gens = RowGenerators(row_seeds if row_seeds is not None else [seed_for(cfg.seed, i) for i in range(b)])
    x = ids.to(device).clone()
    editable = (x == MASK_ID) & ~protected.to(device)  # the region this call may write
    block = _block_index(editable, cfg.blocks)  # each region position's block (all 0 without --blocks)
    allowed = emittable(model.cfg.vocab_size, allow_null, device)
    memory = torch.zeros(b, n, device=device)  # confidence-like scores are kept from the step that sampled
    passes = {"generator": 0, "critic": 0}
    row_passes = torch.zeros(b, dtype=torch.int64, device=device)  # a finished row needs no more passes
    taken_back = torch.zeros_like(editable)  # threshold mode: a commit is taken back once at most (--distrust)
    cache_in, cache_logits, cache_critic, critic_probs, history = None, None, None, None, []
    state: dict = {}  # a stateful policy's memory across steps
    for step in range(1, cfg.steps + 1):
        newly = x == MASK_ID
        if not newly.any():
            break
        if cache_in is None or not torch.equal(x, cache_in):
            with autocast(device):
                h = model(x)
                cache_logits = model.generator_logits(h, x).float()
                cache_critic = model.critic_logits(h).float() if policy.one_pass else None
            cache_in = x.clone()
            passes["generator"] += 1
            row_passes += newly.any(1)
        logits = filter_logits(cache_logits, cfg, allowed)
        art = build_critic_artifacts(x, logits, temperature=1.0 if cfg.temperature > 0 else 0.0,
                                     allow_null=allow_null, generator=gens)
        filled = art.critic_input
        if constraint is not None:
            uniforms = gens.uniform((n,), torch.float64).to(device) if cfg.temperature > 0 else None
            filled = constraint(x, logits, filled, uniforms)
        critic_logits = cache_critic  # a one-pass critic judged the row the generator read: its visible tokens
        if policy.needs_critic and not policy.one_pass:
            with autocast(device):
                critic_logits = model.critic_logits(model(filled)).float()
            passes["critic"] += 1
            row_passes += newly.any(1)
            critic_probs = torch.sigmoid(critic_logits)
        ctx = ScoreContext(probs=logits.softmax(-1), tokens=filled, critic_logits=critic_logits, generator=gens,
                           calibration=calibration, newly=newly, state=state, lock_threshold=cfg.lock_threshold)
        scores = policy.score(ctx).float()
        if not policy.needs_critic and not policy.stateful:  # a generator score means something only where sampled
            scores = torch.where(newly, scores, memory)
            memory = scores
        if cfg.randomness > 0:
            scores = (1 - cfg.randomness) * scores + cfg.randomness * gens.uniform((n,)).to(device)
        open_ = editable & ~state["locked"] if "locked" in state else editable  # locked positions are final
        if cfg.spread and cfg.commit != "threshold":
            scores = spread_scores(scores, newly & open_)
        later = later_blocks(editable, step, cfg, block) if cfg.blocks > 1 else None
        if later is not None:  # later blocks go back to [MASK] before anything else
            scores = torch.where(later, scores + 1e6, scores)
        remask = _choose(step, scores, newly & open_, open_, still_masked(step, cfg, editable, block), cfg, gens, later,
                         taken_back)
        taken_back |= remask & ~newly
        x = filled.masked_fill(remask, MASK_ID)
        if record:
            confidence = ctx.probs.gather(-1, filled[..., None]).squeeze(-1)
            history.append(StepRecord(step, filled.cpu(), scores.cpu(), remask.cpu(),
                                      None if critic_logits is None else torch.sigmoid(critic_logits).cpu(),
                                      newly.cpu(), confidence.cpu()))
    if (x == MASK_ID).any():
        raise CdtError("generation ended with masked positions left")  # cannot happen: the last step commits all
    # the loop only ends once a step remasked nothing, so the last critic pass scored exactly `x`
    return Generation(tokens=x.cpu(), critic_probs=None if critic_probs is None else critic_probs.cpu(),
                      passes=passes, steps=history, row_passes=row_passes.cpu())


def critic_probs(model: DiffusionLM, rows: torch.Tensor) -> torch.Tensor:
    """(b, n) critic P(wrong) of filled rows: one trunk pass."""
    device = next(model.parameters()).device
    with torch.no_grad(), autocast(device):
        logits = model.critic_logits(model(rows.to(device))).float()
    return torch.sigmoid(logits).cpu()


def final_critic_probs(model: DiffusionLM, gen: Generation) -> tuple[torch.Tensor | None, int]:
    """(b, n) critic P(wrong) of the final rows and the extra trunk passes that cost (0 when the
    policy's last critic pass already scored them; None without a critic)."""
    if gen.critic_probs is not None or not model.has_critic:
        return gen.critic_probs, 0
    return critic_probs(model, gen.tokens), 1


def _choose(step, scores, newly, editable, k, cfg: SampleConfig, gens, later=None, taken_back=None) -> torch.Tensor:
    """Which positions go back to [MASK] after this step: k (b,) per row, the schedule's count (`later`:
    blocks whose turn has not come, or None; threshold mode commits by score instead, and takes back an
    earlier commit scored above `cfg.distrust` unless it was taken back once already: `taken_back`)."""
    if step == cfg.steps:
        return torch.zeros_like(newly)
    if cfg.commit == "threshold":
        below = newly & (1.0 - scores < cfg.threshold)
        again = editable & ~newly & (scores > cfg.distrust)  # an earlier commit the policy now distrusts
        below |= again if taken_back is None else again & ~taken_back  # once: a greedy refill would loop
        now = newly if later is None else newly & ~later  # the current block's new tokens
        below = below if later is None else below | (newly & later)
        best = scores.masked_fill(~now, float("inf")).argmin(dim=1)  # the most confident of them per row
        keep_one = torch.zeros_like(newly).scatter_(1, best[:, None], True) & now
        return below & ~keep_one
    if cfg.commit == "lock":
        return pick_worst(scores, newly, torch.minimum(k, newly.sum(1)), cfg, gens)
    return pick_worst(scores, editable, k, cfg, gens)
