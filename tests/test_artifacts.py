"""build_critic_artifacts on hand-computed rows; the one builder everyone calls."""

import re
from pathlib import Path

import pytest
import torch

from cdt.artifacts import build_critic_artifacts
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID

from tests.helpers import tiny_config

V = 8  # ids 0..2 specials, 3..7 characters
A, B, C, D, E = 3, 4, 5, 6, 7
M, P = MASK_ID, PAD_ID


def peaked(choice_per_position, favour_specials=False):
    """(1, n, V) logits putting nearly all mass on the given id per position."""
    logits = torch.full((1, len(choice_per_position), V), -20.0)
    for i, c in enumerate(choice_per_position):
        logits[0, i, c] = 20.0
    if favour_specials:
        logits[..., [MASK_ID, PAD_ID, NULL_ID]] = 50.0
    return logits


CLEAN = torch.tensor([[A, B, C, D, E, P]])
NOISY = torch.tensor([[A, M, C, M, E, P]])
# the generator proposes B (right) at position 1 and A (wrong) at position 3, and nonsense elsewhere
LOGITS = peaked([E, B, E, A, A, E])


def test_fill_replaces_only_masked_positions():
    art = build_critic_artifacts(NOISY, LOGITS, CLEAN, temperature=0.0)
    assert art.critic_input.tolist() == [[A, B, C, A, E, P]]
    assert art.filled.tolist() == [[False, True, False, True, False, False]]
    assert torch.equal(art.pred_tokens, art.critic_input)


def test_target_is_input_differs_from_clean():
    art = build_critic_artifacts(NOISY, LOGITS, CLEAN, temperature=0.0)
    assert art.critic_target.tolist() == [[0, 0, 0, 1, 0, 0]]  # only the wrong fill (A for D) is an error


def test_scopes_never_include_pad():
    masked = build_critic_artifacts(NOISY, LOGITS, CLEAN, temperature=0.0, scope="masked")
    context = build_critic_artifacts(NOISY, LOGITS, CLEAN, temperature=0.0, scope="masked+context")
    assert masked.critic_valid.tolist() == [[False, True, False, True, False, False]]
    assert context.critic_valid.tolist() == [[True, True, True, True, True, False]]


def test_specials_are_never_sampled():
    g = torch.Generator().manual_seed(0)
    noisy = torch.full((64, 6), M)
    logits = peaked([A] * 6, favour_specials=True).expand(64, 6, V)
    art = build_critic_artifacts(noisy, logits, temperature=1.0, generator=g)
    assert (art.critic_input >= 3).all()
    with_null = build_critic_artifacts(noisy, logits, temperature=1.0, allow_null=True, generator=g)
    assert (with_null.critic_input == NULL_ID).all()  # NULL wins once allowed, MASK/PAD still never


def test_without_clean_only_the_fill_is_returned():
    art = build_critic_artifacts(NOISY, LOGITS, temperature=0.0)
    assert art.critic_target is None and art.critic_valid is None
    assert art.critic_input.tolist() == [[A, B, C, A, E, P]]


def test_sampling_is_seeded_and_follows_the_distribution():
    logits = torch.zeros(1, 4000, V)
    logits[..., A] = 2.0  # p(A) = e^2 / (e^2 + 4) among the 5 characters
    noisy = torch.full((1, 4000), M)
    a1 = build_critic_artifacts(noisy, logits, generator=torch.Generator().manual_seed(1))
    a2 = build_critic_artifacts(noisy, logits, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a1.critic_input, a2.critic_input)
    share = (a1.critic_input == A).float().mean().item()
    expected = torch.tensor(2.0).exp().item() / (torch.tensor(2.0).exp().item() + 4)
    assert abs(share - expected) < 0.03


def test_unknown_scope():
    with pytest.raises(ValueError, match="masked\\+context"):
        build_critic_artifacts(NOISY, LOGITS, CLEAN, scope="all")


def test_defined_exactly_once_in_the_package():
    src = Path(__file__).resolve().parents[1] / "cdt"
    defs = [p for p in src.rglob("*.py") if re.search(r"^\s*def build_critic_artifacts\b", p.read_text(), re.M)]
    assert [p.name for p in defs] == ["artifacts.py"]


def test_training_step_goes_through_the_builder(monkeypatch):
    """The training/eval step must call the shared builder, not a copy."""
    import cdt.step as step_mod
    from cdt.data import load_corpus
    from cdt.model import DiffusionLM
    from cdt.noise import get_schedule

    calls = []
    real = step_mod.build_critic_artifacts
    monkeypatch.setattr(step_mod, "build_critic_artifacts", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = tiny_config()
    corpus = load_corpus("toolcalls", cfg.model.block_size, 300)
    cfg.model.vocab_size = len(corpus.vocab)
    g = torch.Generator().manual_seed(0)
    batch = corpus.batch(0, 4, 0)
    out = step_mod.diffusion_step(DiffusionLM(cfg.model), batch, torch.full((4,), 0.5), get_schedule("loglinear"),
                                  cfg.train, "answer", g, torch.device("cpu"))
    assert calls == [1] and out.critic_loss is not None
    assert torch.equal(out.artifacts.critic_valid, out.masked)


@pytest.mark.parametrize("v", [6, 600])  # Gumbel-max (per-token noise) and the inverse CDF (one uniform each)
def test_both_samplers_draw_from_the_tempered_distribution(v):
    from scipy.stats import chisquare

    from cdt.artifacts import noise_width, sample_tokens

    gen = torch.Generator().manual_seed(v)
    logits = torch.randn(v, generator=gen, dtype=torch.float64) * 2
    logits[1] = float("-inf")  # no mass: never drawn
    allowed = torch.ones(v, dtype=torch.bool)
    allowed[0] = False  # excluded by the caller: never drawn
    n = 40_000
    noise = torch.rand((n, noise_width(v)), generator=gen, dtype=torch.float64)
    draws = sample_tokens(logits.expand(n, v), 0.7, noise, allowed)
    assert noise.shape[1] == (v if v <= 256 else 1)
    counts = torch.bincount(draws, minlength=v).double()
    assert counts[0] == 0 and counts[1] == 0
    p = torch.softmax(logits.masked_fill(~allowed, float("-inf")) / 0.7, -1)
    keep = p * n >= 5  # the chi-square approximation needs expected counts of 5 or more per cell
    expected, observed = (p * n)[keep], counts[keep]
    if (p * n)[~keep].sum() > 0:  # the rare tokens pooled into one cell
        expected = torch.cat([expected, (p * n)[~keep].sum().reshape(1)])
        observed = torch.cat([observed, counts[~keep].sum().reshape(1)])
    assert chisquare(observed.numpy(), expected.numpy() * observed.sum().item() / expected.sum().item()).pvalue > 1e-4
