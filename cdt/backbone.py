"""A local Hugging Face masked LM as the trunk: `cdt train --backbone hf:PATH`.

`HFDiffusionLM` offers what `DiffusionLM` offers to the rest of cdt (`model(ids)` -> states,
`generator_logits`, `critic_logits`, `value`), so sampling, eval, explore and calibrate run on it
unchanged. The model's own masked-LM head is the generator; cdt's critic (and value) head reads its
last hidden states. cdt's ids keep the specials at 0..2, so ids go in through the tokenizer's
`inner_of` map and the logits come back in cdt's order.

The pretrained weights are read from local files only (safetensors where the directory has them);
a checkpoint carries the backbone's config and every weight, so it alone rebuilds the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from cdt.config import ModelConfig
from cdt.errors import CdtError, UsageError, warning
from cdt.model import DiffusionLM, critic_head, value_head
from cdt.tokenizer import HF_INSTALL, Bpe, load_file
from cdt.vocab import PAD_ID, emittable

PREFIX = "hf:"


def need_transformers():
    try:
        import transformers
    except ImportError:
        raise CdtError(f"--backbone hf:PATH needs the optional Hugging Face libraries: {HF_INSTALL}") from None
    transformers.logging.set_verbosity_error()  # cdt reports what matters in its own words
    transformers.utils.logging.disable_progress_bar()  # and draws its own progress bars
    return transformers


def backbone_dir(spec: str) -> Path:
    """The directory `hf:PATH` names, or a one-line usage error (never a hub name: nothing is downloaded)."""
    if not spec.startswith(PREFIX):
        raise UsageError(f"--backbone {spec}: expected own or hf:PATH (a local directory in transformers format)")
    path = Path(spec[len(PREFIX):]).expanduser()
    if not path.is_dir():
        raise UsageError(f"--backbone {spec}: {path} is not a directory (models load from local files only)")
    if not (path / "config.json").is_file():
        raise UsageError(f"--backbone {spec}: {path} has no config.json (save one with save_pretrained)")
    return path


def tokenizer_of(spec: str) -> Bpe:
    """The backbone directory's own tokenizer (tokenizer.json), with cdt's specials mapped onto its own."""
    path = backbone_dir(spec)
    if not (path / "tokenizer.json").is_file():
        raise CdtError(f"{path} has no tokenizer.json (save the fast tokenizer beside the model)")
    return load_file(path, reuse_end=True)


def pretrained(cfg: ModelConfig, tokenizer: Bpe) -> "HFDiffusionLM":
    """The backbone `cfg.backbone` names, with fresh cdt heads; `cfg`'s width and block size are checked."""
    transformers = need_transformers()
    path = backbone_dir(cfg.backbone)
    if cfg.trust_remote_code:
        warning(f"--trust-remote-code: Python files in {path} run with your permissions; use it only for a "
                "model directory you trust")
    try:
        inner = transformers.AutoModelForMaskedLM.from_pretrained(
            path, local_files_only=True, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise CdtError(f"cannot load a masked LM from {path}: {str(e).strip().splitlines()[0]}") from None
    fit_config(cfg, inner.config)
    return HFDiffusionLM(cfg, inner, torch.as_tensor(tokenizer.inner_of))


def from_checkpoint(cfg: ModelConfig, config: dict) -> "HFDiffusionLM":
    """The architecture a checkpoint describes (weights loaded by the caller)."""
    transformers = need_transformers()
    if cfg.trust_remote_code:  # its code lives in the original directory, not in the checkpoint
        path = backbone_dir(cfg.backbone)
        hf_config = transformers.AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=True)
        inner = transformers.AutoModelForMaskedLM.from_config(hf_config, trust_remote_code=True)
    else:
        d = dict(config)
        hf_config = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
        inner = transformers.AutoModelForMaskedLM.from_config(hf_config)
    return HFDiffusionLM(cfg, inner, torch.zeros(cfg.vocab_size, dtype=torch.long))


def fit_config(cfg: ModelConfig, inner_config) -> None:
    """Set the fields of `cfg` the backbone decides; refuse a block size it cannot take."""
    limit = getattr(inner_config, "max_position_embeddings", None)
    if limit is not None and cfg.block_size > limit:
        raise UsageError(f"model.block_size {cfg.block_size} exceeds the backbone's {limit} positions; "
                         f"pass --set model.block_size={limit}")
    cfg.d_model = inner_config.hidden_size
    cfg.copy, cfg.ngram, cfg.word_buckets = False, 0, 0  # parts of cdt's own trunk


class HFDiffusionLM(nn.Module):
    """A transformers masked LM (generator) + cdt's critic and value heads on its last hidden states."""

    words = None  # cdt's own trunk's word table: none here

    def __init__(self, cfg: ModelConfig, inner: nn.Module, inner_of: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.hf = inner
        if inner.get_input_embeddings().num_embeddings < cfg.vocab_size:  # cdt added [NULL] (or [MASK]/[PAD])
            inner.resize_token_embeddings(cfg.vocab_size)
        self.hf.requires_grad_(cfg.train_trunk)
        self.critic, self.value_head = critic_head(cfg), value_head(cfg)
        self.register_buffer("inner_of", inner_of.long())  # cdt id -> the backbone's id (kept in checkpoints)
        self.register_buffer("never_emit", ~emittable(cfg.vocab_size, allow_null=True), persistent=False)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def hf_config(self) -> dict:
        """The backbone's config as plain values (a checkpoint stores it)."""
        return json.loads(self.hf.config.to_json_string(use_diff=False))

    has_critic = DiffusionLM.has_critic
    critic_logits = DiffusionLM.critic_logits
    value = DiffusionLM.value
    pool = staticmethod(DiffusionLM.pool)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.cfg.train_trunk:  # a frozen backbone stays in eval mode: its dropout never draws
            self.hf.eval()
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (b, n) -> the backbone's last hidden states (b, n, d); [PAD] keys are masked out."""
        if ids.shape[1] > self.cfg.block_size:
            raise ValueError(f"sequence of {ids.shape[1]} exceeds block size {self.cfg.block_size}")
        out = self.hf(input_ids=self.inner_of[ids], attention_mask=(ids != PAD_ID).long(), output_hidden_states=True)
        h = out.hidden_states[-1]
        self._last = (h, out.logits)
        return h

    trunk = forward

    def generator_logits(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The masked-LM head's logits of the pass that gave `h`, in cdt's id order; [MASK], [PAD] get -inf."""
        if self._last is None or self._last[0] is not h:
            raise RuntimeError("generator_logits takes the states of the latest forward pass")
        logits = self._last[1][..., self.inner_of]
        self._last = None
        return logits.masked_fill(self.never_emit, float("-inf"))

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - (self.hf.get_input_embeddings().weight.numel() if non_embedding else 0)
