"""QK-norm (model.qk_norm): queries and keys at unit RMS per head before rotary positions and attention."""

import torch

from cdt import checkpoint
from cdt.config import ModelConfig, resolve
from cdt.model import DiffusionLM
from cdt.vocab import PAD_ID


def make(qk_norm: bool) -> DiffusionLM:
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=20, d_model=32, n_layers=2, n_heads=2, block_size=24,
                                   qk_norm=qk_norm)).eval()


def scale_queries_and_keys(m: DiffusionLM, factor: float) -> None:
    with torch.no_grad():
        for block in m.blocks:
            d = block.attn.qkv.weight.shape[1]
            block.attn.qkv.weight[: 2 * d] *= factor  # the query and key rows; values untouched


def test_scores_depend_on_the_direction_of_queries_and_keys_not_their_size():
    ids = torch.randint(3, 20, (2, 16))
    for qk_norm in (True, False):
        m = make(qk_norm)
        before = m(ids)
        scale_queries_and_keys(m, 7.0)
        same = torch.allclose(before, m(ids), atol=1e-5)
        assert same == qk_norm  # invariant with the norm; without it a 49x sharper softmax changes the output


def test_the_norm_changes_the_model_and_padding_still_changes_nothing_before_it():
    ids = torch.randint(3, 20, (1, 10))
    plain, normed = make(False), make(True)
    normed.load_state_dict(plain.state_dict())  # the same weights: QK-norm adds no parameters
    assert not torch.allclose(plain(ids), normed(ids))
    padded = torch.cat([ids, torch.full((1, 6), PAD_ID)], 1)
    assert torch.allclose(normed(ids), normed(padded)[:, :10], atol=1e-5)


def test_a_checkpoint_saved_before_qk_norm_existed_loads_without_it(tiny_run, tmp_path):
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    del state["config"]["model"]["qk_norm"]
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / "checkpoint.pt")
    ck = checkpoint.load(old)
    assert ck.config.model.qk_norm is False
    assert not any(b.attn.qk_norm for b in ck.build_model("cpu").blocks)


def test_a_run_with_qk_norm_trains_saves_and_rebuilds_the_same_model(tmp_path):
    from cdt.train import train

    cfg = resolve("tiny", overrides=[{"model": {"qk_norm": True}, "train": {"max_iters": 12}}])
    result = train(cfg, tmp_path / "run")
    assert result.step == 12
    ck = checkpoint.load(tmp_path / "run")
    assert ck.config.model.qk_norm is True
    model = ck.build_model("cpu")
    assert all(b.attn.qk_norm for b in model.blocks)
    ids = torch.randint(3, ck.config.model.vocab_size, (2, 12))
    assert torch.isfinite(model(ids)).all()


def test_the_default_and_long_have_it_and_tiny_does_not():
    assert resolve(None).model.qk_norm and resolve("small").model.qk_norm and resolve("long").model.qk_norm
    assert not resolve("tiny").model.qk_norm
