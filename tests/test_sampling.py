"""The generation loop: every policy and commit mode, pass counts, determinism."""

import pytest
import torch

from cdt.config import ModelConfig
from cdt.errors import CdtError, UsageError
from cdt.model import DiffusionLM
from cdt.rng import seed_for
from cdt.sampling.loop import generate
from cdt.sampling.policies import POLICIES
from cdt.settings import SampleConfig
from cdt.sampling.loop import filter_logits, masked_after, still_masked
from cdt.vocab import MASK_ID

V = 24


def model(critic="linear"):
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=V, d_model=32, n_layers=2, n_heads=2, block_size=40, critic=critic))


def template(n_masks=16, prompt=(5, 6, 7, 8), rows=1):
    ids = torch.tensor(list(prompt) + [MASK_ID] * n_masks).repeat(rows, 1)
    protected = torch.zeros_like(ids, dtype=torch.bool)
    protected[:, : len(prompt)] = True
    return ids, protected


def run(m=None, n_masks=16, rows=1, **kw):
    ids, protected = template(n_masks, rows=rows)
    return generate(m or model(), ids, protected, SampleConfig(**{"steps": 16, **kw}), record=True), ids, protected


def committed_history(gen):
    """Per step, the row as it stands after remasking (MASK where remasked)."""
    return [rec.filled.masked_fill(rec.remasked, MASK_ID) for rec in gen.steps]


def test_masked_after_schedules():
    total = torch.tensor([16])
    assert [int(masked_after(s, 8, total, "linear")) for s in range(1, 9)] == [14, 12, 10, 8, 6, 4, 2, 0]
    cos = [int(masked_after(s, 8, total, "cosine")) for s in range(1, 9)]
    assert cos[-1] == 0 and cos == sorted(cos, reverse=True) and cos[0] == 15  # slow start
    assert [int(masked_after(s, 8, total, "power:1")) for s in range(1, 9)] == [14, 12, 10, 8, 6, 4, 2, 0]
    # 16 * (1 - s/8)^2 = 12.25, 9, 6.25, 4, 2.25, 1, 0.25, 0: most committed at first, the end reached early
    assert [int(masked_after(s, 8, total, "power:2")) for s in range(1, 9)] == [12, 9, 6, 4, 2, 1, 0, 0]


@pytest.mark.parametrize("schedule", ["power", "power:", "power:0", "power:-1", "power:x", "power:nan",
                                      "power:inf", "quadratic", "Linear"])
def test_an_unknown_schedule_is_refused_with_the_choices(schedule):
    with pytest.raises(UsageError, match=r"unknown schedule .*choose from linear, cosine, power:P"):
        SampleConfig(schedule=schedule).validate()


def test_a_front_loaded_schedule_finishes_early_and_spends_only_the_steps_it_ran():
    """power:3 over 8 steps leaves 16 * (1 - s/8)^3 = 10.7, 6.8, 3.9, 2, 0.8 masked: the row is complete after
    step 5, so the loop stops there, one generator pass (and one critic pass) per step it ran."""
    for policy, per_step in (("confidence", {"generator": 1, "critic": 0}), ("critic", {"generator": 1, "critic": 1})):
        gen, _, protected = run(policy=policy, steps=8, schedule="power:3")
        assert [int(rec.remasked.sum()) for rec in gen.steps] == [10, 6, 3, 2, 0]
        assert gen.passes == {k: v * len(gen.steps) for k, v in per_step.items()}
        assert (gen.tokens[~protected] >= 3).all()


def test_filter_logits_top_k_top_p_and_specials():
    logits = torch.log(torch.tensor([[[0.0, 0.0, 0.0, 0.5, 0.3, 0.15, 0.05]]]) + 1e-12)
    allowed = torch.tensor([False, False, False, True, True, True, True])
    p = filter_logits(logits, SampleConfig(top_k=2), allowed).softmax(-1)[0, 0]
    assert (p[:3] == 0).all() and (p[5:] == 0).all() and torch.allclose(p[3:5].sum(), torch.tensor(1.0))
    p = filter_logits(logits, SampleConfig(top_p=0.9), allowed).softmax(-1)[0, 0]
    assert (p[3:6] > 0).all() and p[6] == 0  # 0.5 + 0.3 + 0.15 reaches 0.9; 0.05 is cut


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_policy_fills_every_mask_with_text_and_keeps_the_prompt(policy):
    gen, ids, protected = run(policy=policy, steps=8)
    assert torch.equal(gen.tokens[protected], ids[protected])
    assert (gen.tokens[~protected] >= 3).all()  # no [MASK], [PAD] or [NULL]


@pytest.mark.parametrize("policy, expected", [("confidence", {"generator": 8, "critic": 0}),
                                              ("entropy", {"generator": 8, "critic": 0}),
                                              ("critic", {"generator": 8, "critic": 8})])
def test_pass_counts(policy, expected):
    gen, _, _ = run(policy=policy, steps=8, schedule="linear")
    assert gen.passes == expected


def test_unchanged_rows_reuse_the_generator_pass():
    # 4 masks over 8 linear steps, lock mode: every other step leaves the row as it was
    gen, _, _ = run(n_masks=4, policy="confidence", commit="lock", steps=8, schedule="linear")
    assert gen.passes == {"generator": 4, "critic": 0}


def test_lock_never_changes_a_committed_token():
    gen, _, protected = run(policy="random", commit="lock", steps=8)
    rows = committed_history(gen) + [gen.tokens]
    for before, after in zip(rows, rows[1:]):
        kept = before != MASK_ID
        assert torch.equal(after[kept], before[kept])


def test_remask_mode_can_revise_committed_tokens():
    gen, _, _ = run(policy="random", commit="remask", steps=12, schedule="linear")
    rows = committed_history(gen)
    revised = any(((b != MASK_ID) & (a == MASK_ID)).any() for b, a in zip(rows, rows[1:]))
    assert revised


def test_threshold_commits_at_least_one_per_step_and_all_at_once_when_easy():
    gen, _, _ = run(policy="confidence", commit="threshold", threshold=0.999, steps=40)
    masks_left = [int(r.remasked.sum()) for r in gen.steps]
    assert masks_left[-1] == 0 and len(masks_left) > 1
    assert all(before > after for before, after in zip([16] + masks_left, masks_left))  # >= 1 commit per step
    easy, _, _ = run(policy="confidence", commit="threshold", threshold=0.0, steps=40)
    assert easy.passes["generator"] == 1 and len(easy.steps) == 1


@pytest.mark.parametrize("policy", ["confidence", "critic"])
def test_a_row_pays_only_the_passes_run_while_it_had_masks(policy):
    """Threshold commits: one row with 2 masks, one with 16. Each row's count is the passes run while it
    still had [MASK] left (what a sampler that drops finished rows pays); the batch pays the longest row."""
    ids, protected = template(16, rows=2)
    ids[0, 6:] = 9  # row 0: two masks left
    gen = generate(model(), ids, protected, SampleConfig(policy=policy, commit="threshold", threshold=0.999, steps=40),
                   record=True)
    per_step = 2 if policy == "critic" else 1
    active = [int(rec.masked_before[r].any()) for rec in gen.steps for r in (0, 1)]
    expected = [per_step * sum(active[r::2]) for r in (0, 1)]
    assert gen.row_passes.tolist() == expected and expected[0] < expected[1]
    assert max(expected) == sum(gen.passes.values())

def test_critic_policy_remasks_the_highest_critic_scores():
    gen, _, protected = run(policy="critic", commit="remask", steps=6, schedule="linear")
    for rec in gen.steps[:-1]:
        assert torch.allclose(rec.scores, rec.critic_probs)
        editable = ~protected
        lowest_remasked = rec.scores[rec.remasked].min()
        highest_kept = rec.scores[editable & ~rec.remasked].max()
        assert lowest_remasked >= highest_kept
    assert gen.critic_probs is not None and gen.critic_probs.shape == gen.tokens.shape


def test_critic_confidence_multiplies_the_critic_by_the_confidence_at_sampling():
    gen, _, protected = run(policy="critic-confidence", commit="remask", steps=6, schedule="linear")
    first, second = gen.steps[0], gen.steps[1]
    region = ~protected[0]
    expect = 1 - (1 - first.critic_probs[0]) * first.confidence[0]
    assert torch.allclose(first.scores[0][region], expect[region])
    # step 2: new tokens use their own probability; tokens kept from step 1 keep step 1's
    kept = region & ~first.remasked[0]
    sampled = torch.where(second.masked_before[0], second.confidence[0], first.confidence[0])
    expect = 1 - (1 - second.critic_probs[0]) * sampled
    assert torch.allclose(second.scores[0][region], expect[region])
    assert kept.any() and not torch.allclose(second.confidence[0][kept], first.confidence[0][kept])  # memory matters
    assert gen.passes["critic"] == len(gen.steps)  # two passes per step, like critic


def test_confidence_remasks_the_least_confident_new_tokens():
    gen, _, protected = run(policy="confidence", commit="lock", steps=4, schedule="linear")
    rec = gen.steps[0]
    assert rec.scores[rec.remasked].min() >= rec.scores[~protected & ~rec.remasked].max()


def test_randomness_blends_scores_with_noise():
    plain, _, _ = run(policy="confidence", steps=4, seed=3)
    noisy, _, _ = run(policy="confidence", steps=4, seed=3, randomness=0.4)
    a, b = plain.steps[0].scores, noisy.steps[0].scores  # the same fill at step 1, so the same base scores
    assert torch.equal(plain.steps[0].filled, noisy.steps[0].filled)
    diff = b - 0.6 * a
    assert (diff >= -1e-6).all() and (diff <= 0.4 + 1e-6).all() and not torch.allclose(a, b)


def test_gumbel_selection_remasks_k_positions_but_not_always_the_worst():
    gen, _, _ = run(policy="confidence", steps=4, schedule="linear", selection="gumbel", commit="remask")
    assert [int(r.remasked.sum()) for r in gen.steps] == [12, 8, 4, 0]
    top = lambda r: set(r.scores[0].topk(int(r.remasked.sum())).indices.tolist())
    chosen = lambda r: set(r.remasked[0].nonzero().flatten().tolist())
    assert any(top(r) != chosen(r) for r in gen.steps[:-1])


def test_same_seed_same_rows_and_rows_do_not_depend_on_their_batch():
    m = model()
    ids, protected = template(rows=3)
    cfg = SampleConfig(policy="critic", steps=6, seed=11)
    batch = generate(m, ids, protected, cfg).tokens
    assert torch.equal(batch, generate(m, ids, protected, cfg).tokens)
    alone = generate(m, ids[1:2], protected[1:2], cfg, row_seeds=[seed_for(11, 1)]).tokens
    assert torch.equal(alone[0], batch[1])
    assert not torch.equal(batch[0], batch[1])  # rows draw their own noise


@pytest.mark.parametrize("policy, selection", [("critic", "topk"), ("random", "gumbel"), ("confidence", "topk")])
def test_a_row_does_not_depend_on_the_padding_its_batch_adds(policy, selection):
    """A short row batched with a longer one is padded with [PAD]; its draws must not shift."""
    m = model()
    short, p_short = template(n_masks=8)
    long_, p_long = template(n_masks=20)
    padded = torch.full_like(long_, 1)  # [PAD]
    padded[0, : short.shape[1]] = short[0]
    p_pad = torch.zeros_like(p_long)
    p_pad[0, : short.shape[1]] = p_short[0]
    cfg = SampleConfig(policy=policy, selection=selection, randomness=0.2, steps=5, seed=3)
    alone = generate(m, short, p_short, cfg, row_seeds=[7]).tokens[0]
    together = generate(m, torch.cat([padded, long_]), torch.cat([p_pad, p_long]), cfg, row_seeds=[7, 8]).tokens[0]
    assert torch.equal(alone, together[: short.shape[1]])


def test_critic_policy_needs_a_critic_head():
    with pytest.raises(CdtError, match="trained without one"):
        run(m=model(critic="none"), policy="critic")


@pytest.mark.parametrize("kw, match", [({"steps": 0}, "at least 1"), ({"policy": "oracle"}, "unknown policy"),
                                       ({"commit": "maybe"}, "unknown commit"), ({"randomness": 2.0}, "randomness")])
def test_bad_settings(kw, match):
    with pytest.raises(UsageError, match=match):
        run(**kw)


def test_rcr_locks_above_the_threshold_and_remasks_below_it():
    m = model()
    gen, ids, protected = run(m, policy="rcr", steps=6, lock_threshold=0.05, seed=2)
    locked_at = {}
    for rec in gen.steps:
        for pos in (rec.masked_before[0] & (rec.confidence[0] >= 0.05)).nonzero().flatten().tolist():
            locked_at.setdefault(pos, (rec.step, int(rec.filled[0, pos])))
        for pos, (step, token) in locked_at.items():  # once locked: never remasked, never changed
            assert not rec.remasked[0, pos] and int(rec.filled[0, pos]) == token
    assert locked_at  # the low threshold locks some positions
    revised = 0
    for seed in range(8):  # below the threshold a committed token can be masked again
        strict, _, _ = run(m, policy="rcr", steps=8, lock_threshold=1.0, seed=seed)
        revised += sum(int((rec.remasked[0] & ~rec.masked_before[0]).sum()) for rec in strict.steps)
    assert revised > 0


def test_rcr_remasks_the_lowest_best_confidence():
    m = model()
    gen, _, _ = run(m, policy="rcr", steps=4, lock_threshold=1.0, seed=5)
    rec = gen.steps[0]
    region = rec.masked_before[0]
    conf = rec.confidence[0]
    k = int(rec.remasked[0].sum())
    worst = conf.masked_fill(~region, 2.0).argsort()[:k]
    assert set(worst.tolist()) == set(rec.remasked[0].nonzero().flatten().tolist())


# spread: no two adjacent new tokens committed in one step


def test_spread_scores_defers_all_but_the_best_of_each_masked_neighbourhood():
    from cdt.sampling.loop import spread_scores

    scores = torch.tensor([[0.1, 0.2, 0.05, 0.3, 0.4, 0.9, 0.5, 0.5, 0.5]])
    newly = torch.tensor([[True, True, True, True, True, False, True, True, True]])
    out = spread_scores(scores, newly)
    # 0.1 (left edge) and 0.05 beat their new neighbours; 0.9 is committed already (never competes), so the
    # first of the tied 0.5 run goes first and its tied neighbours wait
    kept = torch.tensor([[True, False, True, False, False, True, True, False, False]])
    assert torch.equal(out[kept], scores[kept])
    assert torch.allclose(out[~kept], scores[~kept] + 1e3)


@pytest.mark.parametrize("commit", ["remask", "lock"])
def test_spread_commits_no_adjacent_new_tokens_while_the_quota_allows(commit):
    def adjacent_commits(gen):
        pairs = bursts = 0
        for rec in gen.steps[:-1]:  # the last step commits whatever is left
            committed = rec.masked_before & ~rec.remasked
            pairs += int((committed[:, 1:] & committed[:, :-1]).sum())
            bursts += int(committed.sum() > 1)
        return pairs, bursts

    kw = dict(n_masks=30, steps=6, schedule="linear", commit=commit, temperature=0.0)
    plain, _, _ = run(**kw)
    spread, _, _ = run(spread=True, **kw)
    assert adjacent_commits(plain)[0] > 0  # without it, neighbours are committed together
    pairs, bursts = adjacent_commits(spread)
    assert bursts > 0 and pairs == 0
    assert (spread.tokens >= 3).all()


def test_later_blocks_hand_computed():
    from cdt.sampling.loop import later_blocks

    editable = torch.tensor([[False, True, True, True, True, True, True, False]])  # a region of 6 positions
    cfg = SampleConfig(steps=6, blocks=3)  # blocks of 2 positions, 2 steps each
    expected = {1: [0, 0, 0, 1, 1, 1, 1, 0], 2: [0, 0, 0, 1, 1, 1, 1, 0], 3: [0, 0, 0, 0, 0, 1, 1, 0],
                4: [0, 0, 0, 0, 0, 1, 1, 0], 5: [0] * 8, 6: [0] * 8}
    for step, row in expected.items():
        assert later_blocks(editable, step, cfg).long().tolist() == [row], step


def test_still_masked_runs_the_schedule_over_each_block_s_own_steps():
    editable = torch.ones(1, 10, dtype=torch.bool)  # blocks: positions 0-4 and 5-9
    cfg = SampleConfig(steps=5, blocks=2)  # block 0 gets steps 1-3, block 1 steps 4-5
    # block 0: 5 later + 5 * (1 - 1/3), 5 * (1 - 2/3), 0; block 1: 5 * (1 - 1/2), 0
    assert [int(still_masked(s, cfg, editable)) for s in range(1, 6)] == [8, 6, 5, 2, 0]
    cfg = SampleConfig(steps=6, blocks=2, schedule="power:2")  # 3 steps each, 5 * (1 - s/3)^2 = 2.2, 0.6, 0
    assert [int(still_masked(s, cfg, editable)) for s in range(1, 7)] == [7, 5, 5, 2, 0, 0]
    plain = SampleConfig(steps=8)
    assert [int(still_masked(s, plain, editable)) for s in range(1, 9)] == [
        int(masked_after(s, 8, torch.tensor([10]), "linear")) for s in range(1, 9)]


@pytest.mark.parametrize("schedule", ["linear", "cosine", "power:3"])
@pytest.mark.parametrize("commit", ["remask", "lock"])
@pytest.mark.parametrize("steps", [5, 7, 8])
def test_no_block_is_committed_before_its_turn(steps, commit, schedule):
    """Whatever the schedule, and with steps not a multiple of the blocks: after each step every position of a
    later block is still masked, and a block is complete by the end of its turn."""
    from cdt.sampling.loop import later_blocks

    gen, _, protected = run(n_masks=16, policy="random", commit=commit, steps=steps, blocks=2, schedule=schedule)
    cfg = SampleConfig(steps=steps, blocks=2)
    left = ~protected & (torch.arange(protected.shape[1]) < 4 + 8)
    last_of_left = -(-steps // 2)  # block 0 gets the steps s with (s - 1) * 2 < steps
    for rec in gen.steps:
        assert rec.remasked[later_blocks(~protected, rec.step, cfg)].all(), rec.step
        if rec.step == last_of_left:  # (remask mode may open its positions again later)
            assert not rec.remasked[left].any()
    assert (gen.tokens[~protected] >= 3).all()


@pytest.mark.parametrize("commit", ["remask", "lock", "threshold"])
def test_blocks_fill_the_region_left_to_right(commit):
    """With 2 blocks over 8 steps, the right half stays masked for the first 4 steps, whatever the scores."""
    gen, _, protected = run(n_masks=16, policy="random", commit=commit, steps=8, blocks=2, threshold=0.0)
    right = torch.zeros_like(protected)
    right[:, 4 + 8:] = True  # prompt of 4, then a region of 16: its last 8 positions
    for rec in gen.steps[:4]:
        assert rec.remasked[right].all()  # nothing of the right block is committed before its turn
    if commit != "threshold":  # threshold commits as fast as confidence allows; the others follow the schedule
        assert not gen.steps[3].remasked[~right & ~protected].any()  # the left block is done by then
    assert len(gen.steps) > 4 and (gen.tokens[~protected] >= 3).all()
    plain, _, _ = run(n_masks=16, policy="random", commit=commit, steps=8, threshold=0.0)
    assert not all(rec.remasked[right].all() for rec in plain.steps[:4])  # without blocks, it would be


def test_blocks_spend_no_extra_passes():
    for policy, expected in (("confidence", {"generator": 8, "critic": 0}), ("critic", {"generator": 8, "critic": 8})):
        gen, _, _ = run(policy=policy, steps=8, blocks=4)
        assert gen.passes == expected


@pytest.mark.parametrize("blocks", [0, 9])
def test_blocks_outside_one_to_steps_are_refused(blocks):
    with pytest.raises(UsageError, match="--blocks must be between 1 and --steps"):
        run(steps=8, blocks=blocks)


def test_prompt_template_names_the_longest_length_that_fits():
    from cdt.data import load_corpus
    from cdt.sampling.template import prompt_template
    vocab = load_corpus("toolcalls", 256, 50, 0).vocab
    ids, protected = prompt_template(vocab, "hello", 14, 20)  # 5 characters + the separator + 14 = 20
    assert ids.shape == (1, 20) and protected.sum() == 6 and (ids[0, 6:] == MASK_ID).all()
    with pytest.raises(CdtError, match=r"prompt \(5 characters \+ 1 separator\) plus --length 15 .* "
                                       r"--length can be at most 14 with this prompt"):
        prompt_template(vocab, "hello", 15, 20)
    with pytest.raises(CdtError, match=r"prompt \(5 characters\) .* at most 15"):
        prompt_template(vocab, "hello", 16, 20, separator=False)
    with pytest.raises(CdtError, match="shorten the prompt$"):
        prompt_template(vocab, "x" * 19, 1, 20)
    assert prompt_template(vocab, "", 20, 20)[0].shape == (1, 20)  # no prompt: no separator either
    with pytest.raises(CdtError, match=r"^--length 21 exceeds the model's block size 20: --length can be at most 20$"):
        prompt_template(vocab, "", 21, 20)
