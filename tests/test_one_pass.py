"""The one-pass critic (issue 43): its training rows are partly masked by the one artifact builder, it is read
from the generator's own pass while sampling (one trunk pass per step), and threshold commits take back what a
critic no longer trusts (`--distrust`)."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cdt.artifacts import build_critic_artifacts, partly_masked
from cdt.config import TrainConfig
from cdt.noise import get_schedule, sample_t
from cdt.sampling.loop import _choose, generate
from cdt.settings import SampleConfig
from cdt.step import diffusion_step
from cdt.vocab import MASK_ID

from tests.helpers import assert_one_line_error, cli
from tests.test_sampling import committed_history, model, run, template


def artifacts(rows=2, n=8, masked=(1, 2, 3, 5, 6)):
    clean = torch.arange(rows * n).reshape(rows, n) % 20 + 4
    noisy = clean.clone()
    noisy[:, list(masked)] = MASK_ID
    logits = torch.zeros(rows, n, 24)
    logits[..., 4] = 5.0  # every fill is token 4
    return build_critic_artifacts(noisy, logits, clean, temperature=0), clean


def test_the_worst_scored_share_of_the_filled_positions_is_masked_again_and_only_the_rest_is_judged():
    art, clean = artifacts()
    before = art.critic_input.clone()
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.8, 5.0, 0.2, 0.3, 9.0]]).repeat(2, 1)  # 4 and 7 are not filled
    partly_masked(art, torch.tensor([1]), scores[1:], torch.tensor([0.6]))  # floor(5 x 0.6) = 3 of row 1
    assert torch.equal(art.critic_input[0], before[0])  # the other row is untouched
    assert (art.critic_input[1] == MASK_ID).nonzero().flatten().tolist() == [1, 3, 6]  # scores 0.9, 0.8, 0.3
    assert torch.equal(art.critic_input[1][[0, 2, 4, 5, 7]], before[1][[0, 2, 4, 5, 7]])
    assert art.critic_valid[1].nonzero().flatten().tolist() == [2, 5]  # the fills still visible
    assert art.critic_valid[0].nonzero().flatten().tolist() == [1, 2, 3, 5, 6]
    assert torch.equal(art.critic_target, (before != clean).float())  # one definition of the label


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=3, max_size=3), st.integers(0, 10_000))
def test_a_share_masks_that_many_fills_none_scored_better_than_a_visible_one(shares, seed):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, 24, (3, 12), generator=g)
    noisy = clean.masked_fill(torch.rand(3, 12, generator=g) < 0.6, MASK_ID)
    art = build_critic_artifacts(noisy, torch.randn(3, 12, 24, generator=g), clean, generator=g)
    filled, scores = art.filled.clone(), torch.rand(3, 12, generator=g)
    partly_masked(art, torch.arange(3), scores, torch.tensor(shares))
    again = art.critic_input == MASK_ID
    assert not (again & ~filled).any()
    for r in range(3):
        assert int(again[r].sum()) == int(filled[r].sum() * shares[r])
        assert torch.equal(art.critic_valid[r], filled[r] & ~again[r])
        if again[r].any() and art.critic_valid[r].any():
            assert scores[r][again[r]].min() >= scores[r][art.critic_valid[r]].max()


def one_pass_step(tiny_model, share, after=None):
    cfg, corpus, m = tiny_model
    g = torch.Generator().manual_seed(0)
    batch = corpus.batch(0, 8, 0)
    tc = TrainConfig(onepass_share=share)
    out = diffusion_step(m, batch, sample_t(8, g), get_schedule("loglinear"), tc, "answer", g, torch.device("cpu"))
    if after is not None:
        after.append(torch.rand(4, generator=g))  # the draw that follows the step
    return batch, out


def test_the_option_draws_from_a_fork_so_every_later_draw_and_validation_stay_as_they_were(tiny_model):
    """Validation's masks follow the generator's draws: with the shares drawn from the stream itself, a run
    with one-pass rows reported bits/char on other masks, not comparable with a run without them."""
    from cdt.train import evaluate

    draws = []
    one_pass_step(tiny_model, 0.0, draws), one_pass_step(tiny_model, 1.0, draws)
    assert torch.equal(draws[0], draws[1])
    cfg, corpus, m = tiny_model
    cfg.train.eval_rows = 32
    plain = evaluate(m, corpus, cfg, torch.device("cpu"), rollouts=False)
    cfg.train.onepass_share = 1.0
    try:
        mixed = evaluate(m, corpus, cfg, torch.device("cpu"), rollouts=False)
    finally:
        cfg.train.onepass_share = 0.0
    assert mixed["val_bpc"] == plain["val_bpc"] and mixed["masked_acc"] == plain["masked_acc"]
    assert mixed["critic_auroc"] is not None  # judged on the fills still visible (a [MASK] is never scored)


def test_training_shows_the_critic_partly_masked_rows_judged_on_their_visible_fills(tiny_model):
    batch, plain = one_pass_step(tiny_model, 0.0)
    _, mixed = one_pass_step(tiny_model, 0.5)
    assert torch.equal(plain.gen_loss, mixed.gen_loss)  # the generator's pass is the same
    assert not (plain.artifacts.critic_input == MASK_ID).any()
    art = mixed.artifacts
    again = art.critic_input == MASK_ID
    assert not again[0::2].any() and again[1::2].any()  # rows 7, 5, 3, 1: from the last row up
    assert not (again & ~art.filled).any()
    assert torch.equal(art.critic_valid, art.filled & ~again)
    visible = ~again
    assert torch.equal(art.critic_input[visible], plain.artifacts.critic_input[visible])  # the same draws otherwise
    assert torch.isfinite(mixed.critic_loss)


def test_the_one_pass_critic_costs_one_trunk_pass_per_step_and_judges_the_row_the_generator_read():
    m = model()
    calls = []
    m.register_forward_hook(lambda *_: calls.append(1))
    gen, ids, protected = run(m, policy="critic-1pass", steps=6, seed=3)
    assert gen.passes == {"generator": 6, "critic": 0} and len(calls) == 6
    assert gen.row_passes.tolist() == [6]
    assert gen.critic_probs is None  # the last fill was never judged: a report needing it pays one more pass
    confidence, _, _ = run(m, policy="confidence", steps=6, seed=3)
    assert confidence.passes["generator"] == 6
    entering = [ids] + committed_history(gen)[:-1]
    for rec, x in zip(gen.steps, entering):
        with torch.no_grad():
            h = m(x)
            p = torch.sigmoid(m.critic_logits(h))
        assert torch.allclose(rec.critic_probs, p, atol=1e-6)  # the critic read from the generator's pass on x
        visible = (x != MASK_ID) & ~protected
        expected = torch.where(visible, p, 1 - rec.confidence)
        region = ~protected
        assert torch.allclose(rec.scores[region], expected[region], atol=1e-5)


def test_one_pass_sampling_is_deterministic_and_batch_independent():
    m = model()
    ids, protected = template(rows=3)
    cfg = SampleConfig(policy="critic-1pass", steps=8, seed=4)
    a = generate(m, ids, protected, cfg)
    b = generate(m, ids[1:2], protected[1:2], cfg, row_seeds=[__import__("cdt.rng").rng.seed_for(4, 1)])
    assert torch.equal(a.tokens, generate(m, ids, protected, cfg).tokens)
    assert torch.equal(a.tokens[1], b.tokens[0])


def test_threshold_commits_take_back_an_earlier_commit_the_policy_distrusts():
    scores = torch.tensor([[0.02, 0.7, 0.05, 0.4, 0.01]])
    newly = torch.tensor([[True, True, False, False, False]])
    editable = torch.ones_like(newly)
    cfg = SampleConfig(steps=8, commit="threshold", threshold=0.9, distrust=0.3)
    remask = _choose(1, scores, newly, editable, torch.tensor([0]), cfg, None)
    assert remask.tolist() == [[False, True, False, True, False]]  # new 0.7 (below 0.9 confident), old 0.4 > 0.3
    keep = _choose(1, scores, newly, editable, torch.tensor([0]), SampleConfig(steps=8, commit="threshold"), None)
    assert keep.tolist() == [[False, True, False, False, False]]  # distrust 1: a commit is final, as before
    assert not _choose(8, scores, newly, editable, torch.tensor([0]), cfg, None).any()  # the ceiling commits all


def test_a_distrusting_critic_still_finishes_within_the_ceiling():
    gen, _, _ = run(policy="critic-1pass", commit="threshold", threshold=0.5, distrust=0.0, steps=12)
    assert not (gen.tokens == MASK_ID).any() and gen.passes["generator"] <= 12 and gen.passes["critic"] == 0
    taken = torch.stack([r.remasked & ~r.masked_before for r in gen.steps])
    assert taken.any()  # with distrust 0 every earlier commit goes back ...
    assert int(taken.sum(0).max()) == 1  # ... once: a greedy refill of the same context would loop to the ceiling


def test_the_command_line_takes_the_policy_and_refuses_a_distrust_outside_0_1(tiny_run):
    import json

    out = cli("sample", "--checkpoint", tiny_run, "--policy", "critic-1pass", "--n", 2, "--steps", 4, "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["passes"]["critic"] == 0 and doc["passes"]["generator"] == 4
    assert_one_line_error(cli("sample", "--checkpoint", tiny_run, "--commit", "threshold", "--distrust", 2), 2,
                          "--distrust must be between 0 and 1")


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_outside_0_1_is_refused(tmp_path, share):
    out = cli("train", "--preset", "tiny", "--out", tmp_path / "r", "--set", f"train.onepass_share={share}")
    assert_one_line_error(out, 2, "train.onepass_share")
