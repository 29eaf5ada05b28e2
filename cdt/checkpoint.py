"""The only save and load of model state.

Writes are atomic (temp file in the same directory, fsync, rename), so a crash never
leaves a half-written checkpoint. Loads use `weights_only=True`: a file holding
pickled objects is refused, never executed. A checkpoint carries the resolved config
and the vocabulary, so it alone rebuilds the model.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cdt.config import RunConfig
from cdt.errors import CdtError
from cdt.model import DiffusionLM
from cdt.vocab import Vocab

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT, VERSION = "cdt-checkpoint", 1


@dataclass
class Checkpoint:
    path: Path
    config: RunConfig
    vocab: Vocab
    model_state: dict
    step: int
    optimizer_state: dict | None = None
    train_model_state: dict | None = None  # the raw weights, when `model_state` holds their moving average
    extra: dict = field(default_factory=dict)  # corpus info, last metrics

    def build_model(self, device: str | torch.device = "cpu") -> DiffusionLM:
        """The model with these weights, in eval mode."""
        model = DiffusionLM(self.config.model)
        model.load_state_dict(self.model_state)
        return model.to(device).eval()


def checkpoint_path(path: str | Path) -> Path:
    """Accept a checkpoint file or the run directory that holds one."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CdtError(f"no checkpoint at {path}")
    return p


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename over `path`; the old file survives any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save(path: Path, *, model: DiffusionLM, config: RunConfig, vocab: Vocab, step: int,
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
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load(path: str | Path) -> Checkpoint:
    p = checkpoint_path(path)
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CdtError(f"refusing to load {p}: it holds pickled Python objects, not plain weights") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CdtError(f"cannot read checkpoint {p} (truncated or corrupt?): {cause}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CdtError(f"{p} is not a cdt checkpoint")
    if state.get("version") != VERSION:
        raise CdtError(f"{p} has checkpoint version {state.get('version')}; this cdt reads version {VERSION}")
    try:
        config = RunConfig.from_dict(state["config"])
        vocab = Vocab.from_dict(state["vocab"])
        return Checkpoint(path=p, config=config, vocab=vocab, model_state=state["model"], step=int(state["step"]),
                          optimizer_state=state.get("optimizer"), train_model_state=state.get("train_model"),
                          extra=state.get("extra") or {})
    except (KeyError, TypeError, CdtError) as e:
        raise CdtError(f"{p} is an incomplete cdt checkpoint ({e})") from None
