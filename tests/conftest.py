import os
from pathlib import Path

import pytest
import torch

from cdt.config import resolve

torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_config(**train):
    """The tiny preset on the CPU, with optional train.* overrides.

    The suite pins the CPU (fp32) where `auto` would take a GPU: its exact comparisons (resume, batch
    independence, re-validation) hold in fp32, not under CUDA's bf16 autocast. The CUDA test asks for it."""
    return resolve("tiny", overrides=[{"train": {"device": "cpu", **train}}])


@pytest.fixture(scope="module")
def tiny_model():
    """(config, 300-record toolcalls corpus, untrained tiny model) for tests that call a training step."""
    from cdt.data import load_corpus
    from cdt.model import DiffusionLM

    cfg = tiny_config()
    corpus = load_corpus("toolcalls", cfg.model.block_size, 300)
    cfg.model.vocab_size = len(corpus.vocab)
    torch.manual_seed(0)
    return cfg, corpus, DiffusionLM(cfg.model)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One tiny training run shared by tests that only read a checkpoint."""
    from cdt.train import train

    out = tmp_path_factory.mktemp("tiny") / "run"
    train(tiny_config(), out)
    return out
