"""Optimisers and the learning-rate schedule of `cdt train`.

`adamw`: AdamW on every parameter, weight decay on matrices only.
`muon`: Muon (momentum orthogonalised by Newton-Schulz iterations, `torch.optim.Muon`) on the
hidden matrices, the trunk's projections and the copy head's query and key; AdamW on the rest (the
embedding, which is also the generator head, the n-gram table, norms, biases and one-row heads). Both step as one
optimiser with one state dict, and every group follows one warm-up + cosine schedule scaled to its
own peak (`train.lr`, or `train.muon_lr` for Muon's matrices).
"""

from __future__ import annotations

import math

import torch

from cdt.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr at max_iters."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / cfg.warmup_iters
    progress = min((step - cfg.warmup_iters) / max(cfg.max_iters - cfg.warmup_iters, 1), 1.0)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


LOOKUP_TABLES = ("embed.weight", "ngram.weight", "words.weight", "pos.weight")


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """Muon's share: matrices with more than one row and column, except the lookup tables (the embedding,
    the n-gram table, learned positions), whose rows are inputs to the trunk, not linear maps."""
    return p.dim() == 2 and min(p.shape) > 1 and name not in LOOKUP_TABLES and ".embeddings." not in name  # a
    # Hugging Face backbone's tables (`--backbone hf:PATH --train-trunk`) are lookup tables too


class MuonAdamW:
    """Muon on the hidden matrices and AdamW on the rest, stepped, zeroed and saved as one."""

    def __init__(self, adamw: torch.optim.AdamW, muon: torch.optim.Muon):
        self.parts = {"adamw": adamw, "muon": muon}

    @property
    def param_groups(self) -> list[dict]:
        return [g for part in self.parts.values() for g in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


def state_kind(state: dict | None) -> str | None:
    """Which optimiser wrote a saved state dict (None when there is none)."""
    if not state:
        return None
    return "muon" if set(state) == {"adamw", "muon"} else "adamw"


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.AdamW | MuonAdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # a frozen backbone is not stepped
    hidden = [p for n, p in named if tc.optimizer == "muon" and is_hidden_matrix(n, p)]
    taken = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in taken]
    adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": tc.weight_decay},
                               {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
                              lr=tc.lr, betas=(tc.beta1, tc.beta2))
    if not hidden:
        return adamw
    # "original": updates scaled by sqrt(max(1, rows/cols)), so muon_lr is the rate of a square matrix
    muon = torch.optim.Muon([{"params": hidden, "muon": True}], lr=tc.muon_lr, weight_decay=tc.weight_decay,
                            adjust_lr_fn="original")
    return MuonAdamW(adamw, muon)


def set_learning_rates(optimizer: torch.optim.Optimizer | MuonAdamW, step: int, tc: TrainConfig) -> float:
    """Every group's rate at `step`; returns the rate of the AdamW groups (the one logged as `lr`)."""
    lr = lr_at(step, tc)
    for group in optimizer.param_groups:
        group["lr"] = lr * tc.muon_lr / tc.lr if group.get("muon") else lr
    return lr
