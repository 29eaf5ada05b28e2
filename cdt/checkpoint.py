"""The only save and load of model state.

Writes are atomic (temp file in the same directory, fsync, rename), so a crash never
leaves a half-written checkpoint. Loads use `weights_only=True`: a file holding
pickled objects is refused, never executed. A checkpoint carries the resolved config
and the vocabulary, so it alone rebuilds the model.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cdt.config import ModelConfig, RunConfig
from cdt.errors import CdtError
from cdt.model import DiffusionLM
from cdt.rundir import CHECKPOINT_NAME, atomic_write
from cdt.tokenizer import Bpe, from_dict as tokenizer_from_dict
from cdt.vocab import Vocab

FORMAT, VERSION = "cdt-checkpoint", 1
ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every file torch.save writes


@dataclass
class Checkpoint:
    path: Path
    config: RunConfig
    vocab: Vocab | Bpe  # the tokenizer: characters, or subword pieces (cdt.tokenizer)
    model_state: dict
    step: int
    optimizer_state: dict | None = None
    train_model_state: dict | None = None  # the raw weights, when `model_state` holds their moving average
    extra: dict = field(default_factory=dict)  # corpus info, last metrics
    backbone: dict | None = None  # a Hugging Face backbone's config (model.backbone hf:PATH), else None

    def build_model(self, device: str | torch.device = "cpu", *, raw: bool = False,
                    architecture: ModelConfig | None = None) -> DiffusionLM:
        """The model with these weights, in eval mode: the only place a model is rebuilt from a checkpoint.

        raw: the weights training continues from, where `model_state` holds their moving average.
        architecture: this checkpoint's model with a value head it lacks (`cdt train --stage value`);
        only that head starts untrained."""
        arch = architecture or self.config.model
        state = self.train_model_state if raw and self.train_model_state is not None else self.model_state
        with torch.device("meta"):  # the architecture's shapes, without allocating: a config may be tampered with
            expected = {k: v.shape for k, v in self._architecture(arch).state_dict().items()}
        new_head = "value_head." if architecture is not None and arch.value_head else None  # starts untrained
        missing = [k for k in expected if k not in state and not (new_head and k.startswith(new_head))]
        unexpected = [k for k in state if k not in expected]
        wrong = [f"{k} is {tuple(state[k].shape)}, the config says {tuple(expected[k])}"
                 for k in expected if k in state and state[k].shape != expected[k]]
        if missing or unexpected or wrong:
            parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
                [f"unexpected {', '.join(unexpected[:3])}"] if unexpected else []) + wrong[:2]
            raise CdtError(f"{self.path} does not match its own architecture: {'; '.join(parts)}")
        model = self._architecture(arch)
        model.load_state_dict(state, strict=new_head is None)
        return model.to(device).eval()

    def _architecture(self, arch: ModelConfig):
        if arch.backbone == "own":
            return DiffusionLM(arch)
        from cdt import backbone

        if not isinstance(self.backbone, dict) or not isinstance(self.backbone.get("model_type"), str):
            raise CdtError(f"{self.path} names a Hugging Face backbone but holds no config for it")
        return backbone.from_checkpoint(arch, self.backbone)


def checkpoint_path(path: str | Path) -> Path:
    """Accept a checkpoint file or the run directory that holds one."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CdtError(f"no checkpoint at {path}")
    return p


def save(path: Path, *, model: DiffusionLM, config: RunConfig, vocab: Vocab | Bpe, step: int,
         optimizer: torch.optim.Optimizer | None = None, extra: dict | None = None,
         train_state: dict | None = None) -> Path:
    """`model` holds the weights to use; `train_state`, the raw weights to resume from when they differ."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "vocab": vocab.to_dict(),
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "train_model": None if train_state is None else {k: v.detach().cpu() for k, v in train_state.items()},
        "extra": extra or {},
        "backbone": getattr(model, "hf_config", None),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load(path: str | Path | Checkpoint) -> Checkpoint:
    """The checkpoint at `path` (a file, or the run directory holding one); a Checkpoint is returned as is."""
    if isinstance(path, Checkpoint):
        return path
    p = checkpoint_path(path)
    with open(p, "rb") as f:
        head = f.read(4)
    if head != ZIP_MAGIC:  # torch.save writes a zip; anything else is refused before torch reads a byte
        if head[:1] == b"\x80":  # a plain pickle (protocol 2+)
            raise CdtError(f"refusing to load {p}: it holds pickled Python objects, not plain weights")
        raise CdtError(f"{p} is not a cdt checkpoint (not a file torch.save wrote)")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CdtError(f"refusing to load {p}: it holds pickled Python objects, not plain weights") from None
    except Exception as e:  # a damaged zip or pickle stream: torch raises many kinds
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CdtError(f"cannot read checkpoint {p} (truncated or corrupt?): {cause}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CdtError(f"{p} is not a cdt checkpoint")
    if state.get("version") != VERSION:
        raise CdtError(f"{p} has checkpoint version {state.get('version')}; this cdt reads version {VERSION}")
    try:
        config = RunConfig.from_dict(state["config"])
        vocab = tokenizer_from_dict(state["vocab"])
        step = state["step"]
        weights = state["model"]
    except KeyError as e:
        raise CdtError(f"{p} is an incomplete cdt checkpoint: it has no {e}") from None
    except (TypeError, ValueError, AttributeError, CdtError) as e:
        raise CdtError(f"{p} is a damaged cdt checkpoint: {e}") from None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CdtError(f"{p} is a damaged cdt checkpoint: its step is {step!r}, not a count")
    for name, part in (("model", weights), ("train_model", state.get("train_model"))):
        if part is not None and not (isinstance(part, dict) and all(isinstance(v, torch.Tensor) for v in part.values())):
            raise CdtError(f"{p} is a damaged cdt checkpoint: its {name!r} entry is not a set of named tensors")
    return Checkpoint(path=p, config=config, vocab=vocab, model_state=weights, step=step,
                      optimizer_state=state.get("optimizer"), train_model_state=state.get("train_model"),
                      extra=state.get("extra") if isinstance(state.get("extra"), dict) else {},
                      backbone=state.get("backbone"))
