"""Held-out infilling templates: answer, random and span masking, for toolcalls and text."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cdt.cli import app
from cdt.data import load_corpus
from cdt.sampling.template import heldout_templates
from cdt.vocab import MASK_ID, PAD_ID
from tests.test_cli import assert_one_line_error

runner = CliRunner()


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


@pytest.mark.parametrize("masking, ratio, fragment", [("middle", 0.3, "unknown masking"), ("span", 0.0, "(0, 1]")])
def test_bad_masking(corpus, masking, ratio, fragment):
    from cdt.errors import UsageError
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace("]", r"\]")):
        heldout_templates(corpus, 3, masking, ratio)


def test_eval_random_and_span_on_toolcalls(tiny_run):
    for mask in ("random", "span"):
        r = runner.invoke(app, ["eval", "--checkpoint", str(tiny_run), "--policies", "confidence", "--steps", "2",
                                "--n", "4", "--mask", mask, "--mask-ratio", "0.5", "--json"])
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["mask"] == mask and doc["mask_ratio"] == 0.5
        assert doc["rows"][0]["json_valid"] is not None


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    from cdt.train import train
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("text")
    data = root / "poem.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    cfg = tiny_config(max_iters=30, eval_interval=30)
    cfg.data.source = str(data)
    cfg.model.block_size = 48
    train(cfg, root / "run")
    return root / "run"


def test_eval_on_a_text_checkpoint_defaults_to_spans(text_run):
    r = runner.invoke(app, ["eval", "--checkpoint", str(text_run), "--policies", "confidence,critic",
                            "--steps", "4", "--n", "6", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mask"] == "span"
    assert all(row["json_valid"] is None and row["field_acc"] is None for row in doc["rows"])
    assert all(0 <= row["char_acc"] <= 1 for row in doc["rows"])
    table = runner.invoke(app, ["eval", "--checkpoint", str(text_run), "--policies", "confidence", "--steps", "2",
                                "--n", "3"])
    assert table.exit_code == 0 and "span regions" in table.stdout and "JSON" not in table.stdout


def test_eval_answer_masking_on_text_is_a_usage_error(text_run):
    assert_one_line_error(runner.invoke(app, ["eval", "--checkpoint", str(text_run), "--mask", "answer", "--n", "2"]),
                          2, "needs a corpus with prompts")
