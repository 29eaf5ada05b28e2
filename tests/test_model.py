import pytest
import torch

from cdt.config import ModelConfig
from cdt.model import DiffusionLM
from cdt.vocab import MASK_ID, PAD_ID


def make(**kw):
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=20, d_model=32, n_layers=2, n_heads=2, block_size=24, **kw)).eval()


@pytest.mark.parametrize("positions", ["rotary", "learned"])
@pytest.mark.parametrize("critic", ["none", "linear", "mlp"])
def test_forward_backward_smoke(positions, critic):
    m = make(positions=positions, critic=critic).train()
    ids = torch.randint(3, 20, (3, 16))
    h = m(ids)
    loss = m.generator_logits(h)[..., 3:].logsumexp(-1).mean()
    if critic != "none":
        loss = loss + m.critic_logits(h).mean()
    loss.backward()
    assert h.shape == (3, 16, 32)
    assert all(p.grad is not None for n, p in m.named_parameters() if "pos" not in n or positions == "learned")


def test_specials_get_minus_infinity():
    m = make()
    logits = m.generator_logits(m(torch.randint(3, 20, (2, 8))))
    assert torch.isinf(logits[..., MASK_ID]).all() and torch.isinf(logits[..., PAD_ID]).all()
    assert torch.isfinite(logits[..., 3:]).all()


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_padding_does_not_change_real_positions(positions):
    """[PAD] keys are masked inside the trunk: appending padding leaves other outputs unchanged."""
    m = make(positions=positions)
    ids = torch.randint(3, 20, (1, 10))
    padded = torch.cat([ids, torch.full((1, 6), PAD_ID)], 1)
    assert torch.allclose(m(ids), m(padded)[:, :10], atol=1e-5)


def test_attention_is_bidirectional():
    m = make()
    ids = torch.randint(3, 20, (1, 10))
    changed = ids.clone()
    changed[0, -1] = 3 if ids[0, -1] != 3 else 4
    assert not torch.allclose(m(ids)[0, 0], m(changed)[0, 0])


def test_no_critic_head_raises():
    m = make(critic="none")
    assert not m.has_critic
    with pytest.raises(RuntimeError, match="without a critic"):
        m.critic_logits(m(torch.randint(3, 20, (1, 4))))


def test_block_size_enforced():
    with pytest.raises(ValueError, match="block size"):
        make()(torch.randint(3, 20, (1, 25)))


def test_rotary_scores_depend_only_on_relative_position():
    from cdt.model import apply_rotary, rotary_table

    torch.manual_seed(0)
    rot = rotary_table(32, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        return (apply_rotary(q, rot[i : i + 1]) * apply_rotary(k, rot[j : j + 1])).sum()
    assert torch.allclose(score(3, 7), score(20, 24), atol=1e-5)
    assert not torch.allclose(score(3, 7), score(3, 9), atol=1e-3)
