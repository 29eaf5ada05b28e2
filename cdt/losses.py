"""Training objectives: the generator's diffusion NELBO and the critic's BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_nelbo(logits: torch.Tensor, clean: torch.Tensor, masked: torch.Tensor, weight: torch.Tensor,
                    n_tokens: int | torch.Tensor) -> torch.Tensor:
    """MDLM NELBO in nats per token: sum over masked positions of w(t) * CE, divided by `n_tokens`.

    logits (b, n, v), clean (b, n), masked (b, n) bool, weight (b,) = w(t) per row.
    `n_tokens` counts every position the noise could have masked, masked or not.
    """
    ce = F.cross_entropy(logits[masked].float(), clean[masked], reduction="none")  # (m,)
    w = weight.to(ce.device)[:, None].expand_as(masked)[masked]
    return (w * ce).sum() / torch.as_tensor(n_tokens).clamp_min(1)  # a tensor: no graph break under compile


def critic_bce(critic_logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over valid positions; target 1 = the token is wrong."""
    if torch.compiler.is_compiling():  # the same mean without testing the data (no graph break)
        bce = F.binary_cross_entropy_with_logits(critic_logits.float(), target.float(), reduction="none")
        return (bce * valid).sum() / valid.sum().clamp_min(1)
    if not bool(valid.any()):
        return critic_logits.sum() * 0.0  # keeps the graph (and every parameter) in the backward
    return F.binary_cross_entropy_with_logits(critic_logits[valid].float(), target[valid])


def pairwise_loss(v_right: torch.Tensor, v_wrong: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry: mean of -log sigmoid(v_right - v_wrong) over pairs (values: higher = more likely right)."""
    return F.softplus(-(v_right - v_wrong)).mean()


def pointwise_loss(values: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """BCE of the value against "the sample is right" (label 1 = wrong, so the target is 1 - label)."""
    return F.binary_cross_entropy_with_logits(values.float(), 1.0 - wrong.float())
