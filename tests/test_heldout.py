"""Held-out infilling templates: answer, random and span masking, for toolcalls and text."""

import json

import pytest
import torch

from cdt.data import load_corpus
from cdt.sampling.template import heldout_templates
from cdt.vocab import MASK_ID, PAD_ID

from tests.helpers import assert_one_line_error, cli


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("toolcalls", 256, 600, 0)


def answers(corpus, n):
    batch = next(corpus.val_batches(n, n))
    return batch.ids, batch.maskable & (batch.ids != PAD_ID)


def test_answer_masking_masks_exactly_the_answer(corpus):
    clean, template, protected = heldout_templates(corpus, 8, "answer")
    _, answer = answers(corpus, 8)
    assert torch.equal(template == MASK_ID, answer)
    assert torch.equal(~protected & (clean != PAD_ID), answer)
    assert torch.equal(template[~answer], clean[~answer])  # the request and padding are untouched


def test_random_masking_stays_inside_the_answer_at_the_ratio(corpus):
    clean, template, protected = heldout_templates(corpus, 40, "random", 0.3, seed=1)
    _, answer = answers(corpus, 40)
    masked = template == MASK_ID
    assert not (masked & ~answer).any()
    assert torch.equal(masked, ~protected)
    assert (masked.sum(1) >= 1).all()
    share = masked.sum() / answer.sum()
    assert 0.25 < share < 0.35
    rows_contiguous = [bool((m.nonzero().flatten().diff() == 1).all()) for m in masked]
    assert not all(rows_contiguous)  # random positions, not one run


def test_span_masking_is_one_run_of_the_right_length(corpus):
    _, template, _ = heldout_templates(corpus, 20, "span", 0.25, seed=3)
    _, answer = answers(corpus, 20)
    masked = template == MASK_ID
    for m, a in zip(masked, answer):
        where = m.nonzero().flatten()
        assert len(where) == max(1, round(0.25 * int(a.sum())))
        assert (where.diff() == 1).all() and a[where].all()


def test_regions_depend_on_seed_and_row_only(corpus):
    _, small, _ = heldout_templates(corpus, 5, "random", 0.5, seed=7)
    _, large, _ = heldout_templates(corpus, 12, "random", 0.5, seed=7)
    w = small.shape[1]
    assert torch.equal(small, large[:5, :w])
    _, other, _ = heldout_templates(corpus, 5, "random", 0.5, seed=8)
    assert not torch.equal(small, other)


@pytest.mark.parametrize("masking, ratio, fragment", [("middle", 0.3, "unknown mask"), ("span", 0.0, "(0, 1]")])
def test_bad_masking(corpus, masking, ratio, fragment):
    from cdt.errors import UsageError
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace("]", r"\]")):
        heldout_templates(corpus, 3, masking, ratio)


def test_eval_random_and_span_on_toolcalls(tiny_run):
    for mask in ("random", "span"):
        r = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence", "--steps", "2",
                "--n", "4", "--mask", mask, "--mask-ratio", "0.5", "--json")
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["mask"] == mask and doc["mask_ratio"] == 0.5
        assert doc["rows"][0]["json_valid"] is not None


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from cdt.train import train
    from tests.helpers import tiny_config

    root = tmp_path_factory.mktemp("text")
    data = root / "poem.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    cfg = tiny_config(max_iters=30, eval_interval=30)
    cfg.data.source = str(data)
    cfg.model.block_size = 48
    train(cfg, root / "run")
    return root / "run"


def test_eval_on_a_text_checkpoint_defaults_to_spans(text_run):
    r = cli("eval", "--checkpoint", str(text_run), "--policies", "confidence,critic",
            "--steps", "4", "--n", "6", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mask"] == "span"
    assert all(row["json_valid"] is None and row["field_acc"] is None for row in doc["rows"])
    assert doc["paired_json_valid"] is None and len(doc["paired"]) == 1  # text: exact match only
    assert all(0 <= row["char_acc"] <= 1 for row in doc["rows"])
    table = cli("eval", "--checkpoint", str(text_run), "--policies", "confidence", "--steps", "2",
                "--n", "3")
    assert table.exit_code == 0 and "span regions" in table.stdout and "JSON" not in table.stdout


def test_eval_answer_masking_on_text_is_a_usage_error(text_run):
    assert_one_line_error(cli("eval", "--checkpoint", str(text_run), "--mask", "answer", "--n", "2"),
                          2, "needs a corpus with prompts")


# batching held-out rows by length


def test_take_trims_to_the_longest_row_taken(tiny_run):
    from cdt.checkpoint import load
    from cdt.sampling.heldout import load_heldout

    held = load_heldout(load(tiny_run), 12)
    lengths = (held.clean != PAD_ID).sum(1)
    rows = torch.tensor([3, 0, 3])
    part = held.take(rows)
    width = int(lengths[rows].max())
    assert part.clean.shape == (3, width)
    assert torch.equal(part.template, held.template[rows, :width])
    assert torch.equal(part.protected, held.protected[rows, :width])
    assert (held.clean[rows, width:] == PAD_ID).all()  # only padding is cut
    assert [r.prompt for r in part.records] == [held.records[i].prompt for i in (3, 0, 3)]
    assert part.exact(load(tiny_run).vocab, part.clean) == [True] * 3


def test_batches_cover_every_row_once_shortest_first(tiny_run):
    from cdt.checkpoint import load
    from cdt.sampling.heldout import load_heldout

    held = load_heldout(load(tiny_run), 23)
    lengths = (held.clean != PAD_ID).sum(1)
    seen, widths = [], []
    for rows in held.by_length(5):
        part = held.take(rows)
        assert len(rows) <= 5 and part.clean.shape == (len(rows), int(lengths[rows].max()))
        assert torch.equal(part.clean, held.clean[rows, : part.clean.shape[1]])
        seen += rows.tolist()
        widths.append(part.clean.shape[1])
    assert sorted(seen) == list(range(23))
    assert lengths[seen].tolist() == sorted(lengths.tolist())  # ordered by length
    assert widths == sorted(widths) and widths[0] < held.clean.shape[1]  # the short rows skip the long rows' padding


def test_eval_equals_a_row_by_row_loop_at_full_width(tiny_run):
    """The oracle: every row generated alone, in order, at the full padded width, graded by hand."""
    from cdt.checkpoint import load
    from cdt.rng import seed_for
    from cdt.grading import grade
    from cdt.sampling.evaluate import evaluate
    from cdt.sampling.heldout import load_heldout
    from cdt.sampling.loop import generate
    from cdt.settings import EvalSettings, SampleConfig, from_flags

    ckpt = load(tiny_run)
    held = load_heldout(ckpt, 9)
    settings = from_flags(EvalSettings, policies="critic", steps="3", n=9, batch_size=4, device="cpu")
    (row,) = evaluate(ckpt, settings).rows  # sampled: seeds matter
    model = ckpt.build_model()
    right = total = exact = valid = 0
    for i in range(len(held)):
        gen = generate(model, held.template[i : i + 1], held.protected[i : i + 1],
                       SampleConfig(policy="critic", steps=3), row_seeds=[seed_for(0, i)])
        region = held.region(i, i + 1)
        right += int(((gen.tokens == held.clean[i : i + 1]) & region).sum())
        total += int(region.sum())
        exact += held.exact(ckpt.vocab, gen.tokens, i)[0]
        valid += grade(ckpt.vocab, held.records[i], gen.tokens[0]).valid_json
    assert row.char_acc == right / total and row.exact == exact / 9 and row.json_valid == valid / 9
