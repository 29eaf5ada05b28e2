"""Fixtures the test modules share: a tiny model and one tiny trained run (helpers.py has the functions)."""

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_config

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def crash_dir(tmp_path_factory) -> Path:
    """Where the last-resort handler keeps tracebacks during the tests (never the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("crashes")
    os.environ["CDT_CRASH_DIR"] = str(path)
    return path


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
