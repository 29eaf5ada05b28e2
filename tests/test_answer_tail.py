"""`data.answer_tail`: answers followed by a seeded [NULL] tail, so the model chooses the answer's length."""

import json

import numpy as np
import pytest
import torch

from cdt.data import SEPARATOR, load_corpus
from cdt.data.toolcalls import generate as generate_records
from cdt.errors import CdtError
from cdt.sampling.heldout import HeldOut
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID

from tests.helpers import assert_one_line_error, cli, tiny_config


def rows_and_tails(corpus, records, rows):
    for r, ids, maskable in zip(records, rows.ids, rows.maskable):
        head = len(corpus.vocab.encode(r.prompt + SEPARATOR))
        body = len(corpus.vocab.encode(r.answer))
        yield head, body, ids, maskable


def test_each_answer_is_followed_by_a_seeded_null_tail_that_is_maskable():
    corpus = load_corpus("toolcalls", 256, 400, 0, answer_tail=12)
    plain = load_corpus("toolcalls", 256, 400, 0)
    tails = []
    for head, body, ids, maskable in rows_and_tails(corpus, corpus.records, corpus.val):
        end = head + body
        tail = int((ids[end:] == NULL_ID).sum())
        tails.append(tail)
        assert 0 <= tail <= 12
        assert (ids[end : end + tail] == NULL_ID).all() and (ids[end + tail :] == PAD_ID).all()
        assert not maskable[:head].any() and maskable[head : end + tail].all() and not maskable[end + tail :].any()
        assert (ids[:end] != NULL_ID).all()  # the request and the answer themselves are untouched
    assert len(set(tails)) > 6  # the tail varies, so a region's length does not give the answer's away
    # the same rows without the tail are the plain corpus; the same seed gives the same tails
    np.testing.assert_array_equal(np.where(corpus.val.ids == NULL_ID, PAD_ID, corpus.val.ids), plain.val.ids)
    again = load_corpus("toolcalls", 256, 400, 0, answer_tail=12)
    np.testing.assert_array_equal(again.train.ids, corpus.train.ids)
    assert load_corpus("toolcalls", 256, 400, 1, answer_tail=12).info["answer_tail"] == 12


def test_the_tail_is_cut_at_the_block_size():
    records = generate_records(400, 0)
    longest = max(len(r.prompt) + 1 + len(r.answer) for r in records)
    corpus = load_corpus("toolcalls", longest, 400, 0, answer_tail=64)
    assert (corpus.train.ids != PAD_ID).sum(1).max() <= longest
    assert corpus.train.ids.shape[1] == longest


@pytest.mark.parametrize("kwargs, message", [
    ({"data": "toolcalls", "answer_tail": -1}, "at least 0"),
    ({"data": "toolcalls", "answer_tail": 4, "scaffold": True}, "do not combine"),
])
def test_bad_tails_are_refused(kwargs, message):
    with pytest.raises(CdtError, match=message):
        load_corpus(block_size=256, n_records=100, **kwargs)


def test_a_text_corpus_has_no_answers_to_tail(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("some text to train on, long enough to split. " * 20)
    with pytest.raises(CdtError, match="needs a corpus of calls"):
        load_corpus(str(path), 32, answer_tail=4)


def test_exact_match_reads_the_text_with_null_dropped():
    # vocabulary-free hand case: ids 3.. are characters; the region is positions 1..6 of each row
    class V:
        def decode(self, ids):
            return "".join(chr(ord("a") + i - 3) for i in ids.tolist() if i >= 3)

    clean = torch.tensor([[5, 3, 4, 5, NULL_ID, NULL_ID, PAD_ID]] * 4)
    protected = torch.tensor([[True, False, False, False, False, False, True]] * 4)
    held = HeldOut(clean, clean.masked_fill(~protected, MASK_ID), protected, None, "answer")
    generated = torch.tensor([
        [5, 3, 4, 5, NULL_ID, NULL_ID, PAD_ID],  # identical
        [5, 3, NULL_ID, 4, 5, NULL_ID, PAD_ID],  # the same text, a [NULL] inside: the text is what a user reads
        [5, 3, 4, 5, 5, NULL_ID, PAD_ID],  # one character too long
        [5, 3, 4, NULL_ID, NULL_ID, NULL_ID, PAD_ID],  # ended one character early
    ])
    assert held.exact(V(), generated) == [True, True, False, False]
    assert held.exact(V(), generated[2:], lo=2) == [False, False]


@pytest.fixture(scope="module")
def tail_run(tmp_path_factory):
    from cdt.train import train

    cfg = tiny_config()
    cfg.data.answer_tail = 16
    out = tmp_path_factory.mktemp("tail") / "run"
    train(cfg, out)
    return out


def test_a_tail_model_samples_null_and_prints_only_text(tail_run, monkeypatch):
    from cdt.sampling import run as run_module

    seen = {}
    real = run_module.generate

    def spy(*args, **kwargs):
        seen["allow_null"] = kwargs.get("allow_null")
        gen = real(*args, **kwargs)
        seen["nulls"] = int((gen.tokens == NULL_ID).sum())
        return gen

    monkeypatch.setattr(run_module, "generate", spy)
    result = cli("sample", "--checkpoint", str(tail_run), "--prompt", "Weather in Oslo today",
                 "--length", "60", "--n", "4", "--steps", "6", "--seed", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert seen["allow_null"] is True
    assert seen["nulls"] > 0  # this seed's draws hold some [NULL]: they are dropped from the text
    doc = json.loads(result.stdout)
    lengths = [len(s["text"]) for s in doc["samples"]]
    assert sum(lengths) == 4 * 60 - seen["nulls"]
    for s in doc["samples"]:
        assert len(s["critic_probs"]) == len(s["text"])  # one probability per printed character
    # the trajectory shows where the answer ended: [NULL] as ∅, one per [NULL] in the final rows
    shown = cli("sample", "--checkpoint", str(tail_run), "--prompt", "Weather in Oslo today",
                "--length", "60", "--n", "4", "--steps", "6", "--seed", "3", "--show-steps")
    assert shown.exit_code == 0, shown.stderr
    finals = [ln for ln in shown.stderr.splitlines() if ln.strip().startswith("step   6")]
    assert len(finals) == 4 and sum(ln.count("∅") for ln in finals) == seen["nulls"]


def test_eval_grades_a_tail_model(tail_run):
    result = cli("eval", "--checkpoint", str(tail_run), "--n", "8", "--steps", "4",
                 "--policies", "confidence", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["answer_tail"] == 16  # scripts can tell the task from the plain one
    row = doc["rows"][0]
    assert 0.0 <= row["exact"] <= 1.0 and row["json_valid"] is not None
    table = cli("eval", "--checkpoint", str(tail_run), "--n", "8", "--steps", "4",
                "--policies", "confidence")
    assert "8 held-out answers (each + 0-16 [NULL]) infilled" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--scaffold", "--set", "data.answer_tail=4"], "do not combine"),
    (["--data", "TEXT", "--set", "data.answer_tail=4"], "needs a corpus of calls"),
])
def test_the_cli_refuses_a_tail_it_cannot_build_as_a_usage_error(tmp_path, args, message):
    text = tmp_path / "t.txt"
    text.write_text("some text to train on, long enough to split. " * 20)
    args = [str(text) if a == "TEXT" else a for a in args]
    result = cli("train", "--preset", "tiny", *args, "--out", str(tmp_path / "r"))
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "r").exists()


def test_training_fills_the_tail_with_null_allowed(tmp_path, monkeypatch):
    """The critic judges [NULL] fills on tail positions; were [NULL] not allowed, every tail fill
    would be wrong by construction and the critic would learn nothing about where answers end."""
    import cdt.step as step_module
    import cdt.train as train_module

    seen = []
    real = step_module.build_critic_artifacts

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_null"))
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "build_critic_artifacts", spy)
    cfg = tiny_config(max_iters=2, eval_interval=2)
    cfg.data.answer_tail = 8
    train_module.train(cfg, tmp_path / "run")
    assert seen and all(seen)
    cfg.data.answer_tail = 0
    seen.clear()
    train_module.train(cfg, tmp_path / "plain")
    assert seen and not any(seen)


def test_explore_explains_null_only_for_models_that_write_it(tail_run, tiny_run):
    tail = cli("explore", "--checkpoint", str(tail_run), "--steps", "3", "--final-only")
    assert tail.exit_code == 0, tail.stderr
    assert "∅ = [NULL]" in tail.stdout  # the legend names the glyph the tail rows use
    plain = cli("explore", "--checkpoint", str(tiny_run), "--steps", "3", "--final-only")
    assert plain.exit_code == 0 and "░ = [MASK]" in plain.stdout and "[NULL]" not in plain.stdout
