import dataclasses
import pickle
import warnings

import pytest
import torch

from cdt import checkpoint
from cdt.config import resolve
from cdt.errors import CdtError
from cdt.model import DiffusionLM
from cdt.vocab import Vocab

from tests.helpers import NotWeights


def small_model():
    cfg = resolve("tiny")
    vocab = Vocab.from_text("abcdef {}")
    cfg.model.vocab_size = len(vocab)
    torch.manual_seed(0)
    return cfg, vocab, DiffusionLM(cfg.model)


def test_roundtrip_rebuilds_the_same_model(tmp_path):
    cfg, vocab, model = small_model()
    checkpoint.save(tmp_path / "checkpoint.pt", model=model, config=cfg, vocab=vocab, step=7, extra={"a": 1})
    ck = checkpoint.load(tmp_path)  # a run directory works as well as the file
    assert ck.step == 7 and ck.vocab == vocab and ck.config == cfg and ck.extra == {"a": 1}
    ids = torch.randint(3, len(vocab), (2, 9))
    rebuilt = ck.build_model()
    model.eval()
    assert torch.equal(rebuilt(ids), model(ids))
    assert torch.equal(rebuilt.critic_logits(rebuilt(ids)), model.critic_logits(model(ids)))


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoint.atomic_write(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cdt-checkpoint", "payload": NotWeights()}, path)
    with pytest.raises(CdtError, match="pickled Python objects"):
        checkpoint.load(path)
    assert "would run" not in capsys.readouterr().out


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(NotWeights()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refusal is the only thing a user sees: no torch warning first
        with pytest.raises(CdtError, match="pickled Python objects"):
            checkpoint.load(path)


def test_truncated_file(tmp_path):
    cfg, vocab, model = small_model()
    good = checkpoint.save(tmp_path / "checkpoint.pt", model=model, config=cfg, vocab=vocab, step=1)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CdtError, match="truncated or corrupt"):
        checkpoint.load(cut)


def test_other_torch_files_and_missing_paths(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CdtError, match="not a cdt checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
    with pytest.raises(CdtError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "missing")
    with pytest.raises(CdtError, match="no checkpoint at"):
        checkpoint.load(tmp_path)  # a directory without checkpoint.pt


def test_weights_that_do_not_fit_the_config_are_one_error_naming_the_file(tmp_path):
    cfg, vocab, model = small_model()
    path = checkpoint.save(tmp_path / "c.pt", model=model, config=cfg, vocab=vocab, step=1)
    ckpt = checkpoint.load(path)
    name = next(iter(ckpt.model_state))
    ckpt.model_state[name] = torch.zeros(3, 3)  # another shape than the config builds
    with pytest.raises(CdtError, match=f"{path} does not match its own architecture: .*{name}"):
        ckpt.build_model()
    ckpt = checkpoint.load(path)
    del ckpt.model_state[name]
    with pytest.raises(CdtError, match=f"missing {name}"):
        ckpt.build_model()


def test_the_value_stage_adds_an_untrained_head_and_nothing_else(tmp_path):
    cfg, vocab, model = small_model()
    ckpt = checkpoint.load(checkpoint.save(tmp_path / "c.pt", model=model, config=cfg, vocab=vocab, step=1))
    arch = dataclasses.replace(cfg.model, value_head=True)
    with_head = ckpt.build_model(architecture=arch)
    assert with_head.value_head is not None
    assert all(torch.equal(with_head.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CdtError, match="does not match"):
        ckpt.build_model(architecture=dataclasses.replace(cfg.model, d_model=64, n_heads=2))
