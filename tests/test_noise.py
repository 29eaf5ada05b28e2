import pytest
import torch

from hypothesis import given, settings, strategies as st

from cdt.noise import SCHEDULES, corrupt, get_schedule, sample_t, span_like, span_region
from cdt.errors import UsageError
from cdt.vocab import MASK_ID


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_weight_is_minus_dalpha_over_one_minus_alpha(name):
    s = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    alpha = s.alpha(t)
    (dalpha,) = torch.autograd.grad(alpha.sum(), t)
    expected = -dalpha / (1 - alpha)
    assert torch.allclose(s.weight(t.detach()), expected.detach(), rtol=1e-6)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_masking_goes_from_clean_to_masked(name):
    s = get_schedule(name)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    p = s.mask_prob(t)
    assert p[0] < 1e-6 and p[-1] > 0.99 and (p.diff() >= 0).all()


def test_unknown_schedule():
    with pytest.raises(UsageError, match="loglinear"):
        get_schedule("sqrt")


def test_antithetic_times_are_evenly_spread():
    g = torch.Generator().manual_seed(0)
    t = sample_t(8, g).sort().values
    gaps = t.diff()
    assert torch.allclose(gaps, gaps[0].expand_as(gaps), atol=1e-6)
    assert ((t >= 1e-3) & (t < 1)).all()


def test_corrupt_masks_only_maskable_at_the_schedule_rate():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, 50, (4, 20000))
    maskable = torch.ones_like(clean, dtype=torch.bool)
    maskable[:, :100] = False
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    s = get_schedule("cosine")
    noisy, masked = corrupt(clean, maskable, t, s, g)
    assert not masked[:, :100].any()
    assert torch.equal(noisy == MASK_ID, masked) and torch.equal(noisy[~masked], clean[~masked])
    rate = masked[:, 100:].float().mean(1)
    assert torch.allclose(rate, s.mask_prob(t).float(), atol=0.015)
    again, _ = corrupt(clean, maskable, t, s, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_span_region_is_one_contiguous_run_of_the_maskable_positions(data):
    """span_region against a loop over each row's maskable positions; span_like keeps each row's count
    and puts the run anywhere it fits."""
    b, n = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 12))
    maskable = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=b, max_size=b)))
    where = [maskable[i].nonzero().flatten().tolist() for i in range(b)]
    counts = torch.tensor([data.draw(st.integers(0, len(w))) for w in where])
    starts = torch.tensor([data.draw(st.integers(0, len(w) - int(c))) for w, c in zip(where, counts)])
    expect = torch.zeros(b, n, dtype=torch.bool)
    for i, w in enumerate(where):
        expect[i, w[int(starts[i]) : int(starts[i]) + int(counts[i])]] = True
    assert torch.equal(span_region(maskable, starts, counts), expect)
    noisy = torch.full((b, n), 7).masked_fill(expect, MASK_ID)
    u = torch.tensor(data.draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=b, max_size=b)), dtype=torch.float64)
    got = span_like(noisy, maskable, u)
    assert torch.equal(got.sum(1), counts) and not (got & ~maskable).any()
    for i, w in enumerate(where):
        picked = [w.index(j) for j in got[i].nonzero().flatten().tolist()]
        assert picked == list(range(picked[0], picked[0] + len(picked))) if picked else int(counts[i]) == 0
