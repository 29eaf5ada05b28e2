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
@pytest.mark.parametrize("copy", [False, True])
def test_forward_backward_smoke(positions, critic, copy):
    m = make(positions=positions, critic=critic, copy=copy).train()
    ids = torch.randint(3, 20, (3, 16))
    ids[:, ::3] = MASK_ID
    h = m(ids)
    loss = -m.generator_logits(h, ids)[..., 3:].log_softmax(-1).mean()
    if critic != "none":
        loss = loss + m.critic_logits(h).mean()
    loss.backward()
    assert h.shape == (3, 16, 32)
    assert all(p.grad is not None for n, p in m.named_parameters() if "pos" not in n or positions == "learned")


@pytest.mark.parametrize("copy", [False, True])
def test_specials_get_minus_infinity(copy):
    m = make(copy=copy)
    ids = torch.randint(3, 20, (2, 8))
    ids[:, :3] = MASK_ID
    logits = m.generator_logits(m(ids), ids)
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


# copy head


def _copy_model(gate_bias: float):
    """A copy model whose pointer is uniform over visible positions (zero query) and whose gate is pinned."""
    m = make(copy=True)
    with torch.no_grad():
        m.copy["q"].weight.zero_()
        m.copy["gate"].weight.zero_()
        m.copy["gate"].bias.fill_(gate_bias)
    return m


def _vocabulary_head(m, h):
    """The plain tied head's log-probabilities, what the copy mixture must reduce to at gate 1."""
    return (h @ m.embed.weight.t()).masked_fill(m.never_emit, float("-inf")).log_softmax(-1)


def test_copy_head_gives_normalised_log_probabilities():
    m = make(copy=True)
    ids = torch.randint(3, 20, (2, 12))
    ids[:, 4:9] = MASK_ID
    logits = m.generator_logits(m(ids), ids)
    assert torch.allclose(logits.logsumexp(-1), torch.zeros(2, 12), atol=1e-5)


def test_copy_distribution_is_the_pointer_weight_per_character():
    """Hand-computed: a uniform pointer over the 5 visible positions of [5 5 7 M M 9 5 P P], gate ~ 0
    (all mass on copying) -> p(5) = 3/5, p(7) = p(9) = 1/5, every other character ~0, at every position."""
    m = _copy_model(gate_bias=-40.0)
    ids = torch.tensor([[5, 5, 7, MASK_ID, MASK_ID, 9, 5, PAD_ID, PAD_ID]])
    p = m.generator_logits(m(ids), ids).exp()[0]
    expected = torch.zeros(20)
    expected[5], expected[7], expected[9] = 0.6, 0.2, 0.2
    assert torch.allclose(p, expected.expand(9, 20), atol=1e-6)


def test_copy_gate_one_is_the_plain_generator_head():
    m = _copy_model(gate_bias=40.0)
    ids = torch.randint(3, 20, (2, 10))
    ids[:, 2:6] = MASK_ID
    h = m(ids)
    plain = _vocabulary_head(m, h)
    assert torch.allclose(m.generator_logits(h, ids), plain, atol=1e-5)


def test_copy_row_with_nothing_visible_falls_back_to_the_vocabulary():
    """An all-[MASK] row has nothing to copy: the result is the vocabulary head, finite, whatever the gate."""
    m = _copy_model(gate_bias=-40.0)
    ids = torch.full((1, 8), MASK_ID)
    h = m(ids)
    plain = _vocabulary_head(m, h)
    out = m.generator_logits(h, ids)
    assert torch.allclose(out, plain, atol=1e-5)
    out.exp().sum().backward()  # no NaN gradients through the unused pointer
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_copy_head_ignores_padding():
    m = make(copy=True)
    ids = torch.randint(3, 20, (1, 10))
    ids[0, 3:6] = MASK_ID
    padded = torch.cat([ids, torch.full((1, 5), PAD_ID)], 1)
    a = m.generator_logits(m(ids), ids)
    b = m.generator_logits(m(padded), padded)[:, :10]
    assert torch.allclose(a, b, atol=1e-5)


def test_the_trunk_traces_as_one_graph_for_torch_compile():
    m = make()
    ids = torch.randint(3, 20, (2, 16))
    ids[1, 12:] = PAD_ID  # a padded row: the key mask is built without testing the data
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m.trunk)(ids)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    with torch.no_grad():  # and eager still gives the same states with or without padding in the batch
        assert torch.allclose(m.trunk(ids[:1]), m.trunk(ids)[:1], atol=1e-6)
