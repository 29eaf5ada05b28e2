"""The one place that turns generator logits into the critic's input and labels.

Training, sampling, explore and calibrate all call `build_critic_artifacts`; a second
copy is how a critic that works ends up measured as broken (filling every position
instead of only the masked ones makes most "errors" artificial).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cdt.rng import RowGenerators
from cdt.vocab import MASK_ID, PAD_ID, emittable

SCOPES = ("masked", "masked+context")
# critic_target is 1 where a token differs from the clean row: what every report says the critic's number means
CRITIC_POLARITY = "probability that the token is wrong (higher = more likely wrong)"


@dataclass
class CriticArtifacts:
    pred_tokens: torch.Tensor  # (b, n) the noisy row with a generator sample at every [MASK]
    critic_input: torch.Tensor  # (b, n) what the critic pass reads (same tensor as pred_tokens)
    filled: torch.Tensor  # (b, n) bool, positions that were [MASK] and are now generator samples
    critic_target: torch.Tensor | None = None  # (b, n) float, 1 = token differs from the clean row
    critic_valid: torch.Tensor | None = None  # (b, n) bool, positions the critic is scored on
    scope: str = "masked"  # which positions critic_valid holds (SCOPES)


# Up to this many tokens a sample takes one uniform per token (Gumbel-max, as character models always have,
# so their figures stay as measured); a larger vocabulary takes one per position (the inverse of the
# distribution's CDF): the same distribution, with a v-th of the noise. At 30,522 tokens the per-token
# noise, drawn on the CPU so that a row's samples do not depend on its batch, cost 30 ms per row and step.
GUMBEL_MAX_VOCAB = 256


def noise_width(v: int) -> int:
    """Uniforms one sampled position takes from a vocabulary of v tokens."""
    return v if v <= GUMBEL_MAX_VOCAB else 1


def sample_tokens(logits: torch.Tensor, temperature: float, uniform: torch.Tensor | None,
                  allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Sampling in float64 over (..., v) logits with `uniform` noise of (..., noise_width(v)): Gumbel-max with
    one uniform per token, or the inverse CDF with one per position; temperature 0 = argmax.

    `allowed` (v,) bool restricts the choice (specials are excluded by the caller).
    """
    logits = logits.double()
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if temperature <= 0:
        return logits.argmax(-1)
    uniform = uniform.to(logits.device)
    if uniform.shape[-1] == 1 < logits.shape[-1]:  # the first index whose cumulative mass passes u x total
        cdf = torch.softmax(logits / temperature, -1).cumsum(-1)
        at = torch.searchsorted(cdf, uniform * cdf[..., -1:], right=True).squeeze(-1)
        return at.clamp_max(logits.shape[-1] - 1)  # a token of no mass is never the first to pass
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    return (logits / temperature + gumbel).argmax(-1)


def _fill_noise(filled: torch.Tensor, v: int, generator) -> torch.Tensor:
    """(m, noise_width(v)) float64 uniforms for the m filled positions. Per-row generators draw whole rows,
    so a row's samples do not depend on the other rows of its batch."""
    if isinstance(generator, RowGenerators):
        return generator.uniform((filled.shape[1], noise_width(v)), torch.float64)[filled.cpu()]
    return torch.rand((int(filled.sum()), noise_width(v)), generator=generator, dtype=torch.float64)


def build_critic_artifacts(noisy: torch.Tensor, logits: torch.Tensor, clean: torch.Tensor | None = None, *,
                           temperature: float = 1.0, scope: str = "masked", allow_null: bool = False,
                           generator: torch.Generator | RowGenerators | None = None) -> CriticArtifacts:
    """Fill the [MASK] positions of `noisy` (b, n) from `logits` (b, n, v) and label the result.

    - critic_input: `noisy` with only its [MASK] positions replaced; every other token is kept.
    - critic_target: critic_input != clean (needs `clean`).
    - critic_valid: scope "masked" = the filled positions; "masked+context" = every non-[PAD]
      position (context tokens are copies of the clean row, so their target is 0).
    Specials are never sampled: [MASK]/[PAD] never, [NULL] only with allow_null (scaffolds).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown critic scope {scope!r}; choose from {', '.join(SCOPES)}")
    filled = noisy == MASK_ID
    allowed = emittable(logits.shape[-1], allow_null, logits.device)
    critic_input = noisy.clone()
    noise = _fill_noise(filled, logits.shape[-1], generator) if temperature > 0 else None
    critic_input[filled] = sample_tokens(logits[filled], temperature, noise, allowed)  # only (m, v) rows
    out = CriticArtifacts(pred_tokens=critic_input, critic_input=critic_input, filled=filled, scope=scope)
    if clean is not None:
        out.critic_target = (critic_input != clean).float()
        out.critic_valid = filled.clone() if scope == "masked" else noisy != PAD_ID
    return out


def with_rows(art: CriticArtifacts, rows: torch.Tensor, tokens: torch.Tensor, clean: torch.Tensor,
              filled: torch.Tensor | None = None) -> CriticArtifacts:
    """`art` with the critic input of `rows` replaced by `tokens` (b', n), rows the sampler filled in several
    steps, and their targets relabelled the one way: input != clean. `filled` (b', n): the positions the
    sampler filled when they are not the corruption's (a span rollout); the critic is then scored on those
    instead (and on the context too under scope masked+context)."""
    art.critic_input[rows] = tokens
    if filled is not None:
        art.filled[rows] = filled
        if art.critic_valid is not None and art.scope == "masked":  # masked+context: every non-[PAD] one still
            art.critic_valid[rows] = filled
    if art.critic_target is not None:
        art.critic_target[rows] = (tokens != clean[rows]).float()
    return art


def partly_masked(art: CriticArtifacts, rows: torch.Tensor, scores: torch.Tensor, shares: torch.Tensor) -> CriticArtifacts:
    """`art` with `rows` (b',) put in the state a one-pass critic meets while sampling: in each such row the
    share `shares` (b',) of its filled positions that `scores` (b', n) rates worst (higher = worse, as a
    remasking policy's scores) is [MASK] again, and the critic is scored on the filled positions still
    visible, the generator's earlier samples. Targets keep the one definition: input != clean."""
    filled = art.filled[rows]
    keys = scores.double().masked_fill(~filled, float("-inf"))
    rank = keys.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = the worst-scored filled position
    again = filled & (rank < torch.floor(filled.sum(1) * shares.to(filled.device)).long()[:, None])
    art.critic_input[rows] = art.critic_input[rows].masked_fill(again, MASK_ID)
    if art.critic_valid is not None:
        art.critic_valid[rows] = art.critic_valid[rows] & ~again
    return art
