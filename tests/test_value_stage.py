"""The sequence-level value head: pairs, losses, the critic stage, and scores from it."""

import json
import math

import pytest
import torch

from cdt.checkpoint import load
from cdt.data import load_corpus
from cdt.errors import CdtError
from cdt.losses import pairwise_loss, pointwise_loss
from cdt.metrics import pairwise_accuracy
from cdt.value_pairs import Sample, build_pairs, load_samples, mixed_groups, split_groups

from tests.helpers import assert_one_line_error, cli


def samples_of(spec):
    """spec: {group: labels}"""
    return [Sample(f"{g}-{k}", g, lab, "q\n", "a", "") for g, labels in spec.items() for k, lab in enumerate(labels)]


def test_pairs_stay_inside_groups_are_unique_and_seed_stable():
    s = samples_of({0: [0, 1, 1], 1: [0, 0, 1], 2: [1, 1], 3: [0]})
    pairs = build_pairs(s, {0, 1, 2, 3}, 100, seed=0)
    assert len(pairs) == 2 + 2  # group 0: 1x2, group 1: 2x1; groups 2 and 3 have one label only
    assert len(set(pairs)) == len(pairs)
    for r, w in pairs:
        assert s[r].group == s[w].group and s[r].label == 0 and s[w].label == 1
    assert build_pairs(s, {0, 1}, 3, seed=5) == build_pairs(s, {0, 1}, 3, seed=5)
    assert len(build_pairs(s, {0, 1}, 3, seed=5)) == 3
    assert build_pairs(s, {2, 3}, 10, seed=0) == []
    assert mixed_groups(s, {0, 1, 2, 3}) == 2


def test_group_split_is_disjoint_and_seeded():
    groups = list(range(50)) * 3
    train, val = split_groups(groups, 0.2, seed=1)
    assert not train & val and train | val == set(range(50)) and len(val) == 10
    assert split_groups(groups, 0.2, seed=1) == (train, val)
    assert split_groups(groups, 0.2, seed=2) != (train, val)


def test_losses_and_accuracy_by_hand():
    loss = pairwise_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert float(loss) == pytest.approx((math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2)
    # pointwise: value 0 -> p(right) 0.5 whatever the label
    assert float(pointwise_loss(torch.zeros(3), torch.tensor([0, 1, 1]))) == pytest.approx(math.log(2.0))
    assert float(pointwise_loss(torch.tensor([3.0]), torch.tensor([0]))) == pytest.approx(math.log1p(math.exp(-3.0)))
    assert pairwise_accuracy([1.0, 0.0, 2.0], [0.0, 0.0, 3.0]) == pytest.approx(0.5)
    assert pairwise_accuracy([], []) is None


@pytest.fixture(scope="module")
def samples_file(tmp_path_factory):
    """Right answers (the references) and wrong ones (a value changed) for 40 held-out prompts."""
    corpus = load_corpus("toolcalls", 256, 2000, 0)
    path = tmp_path_factory.mktemp("pairs") / "samples.jsonl"
    lines = []
    for g, rec in enumerate(corpus.records[:40]):
        wrong = rec.answer.replace('": "', '": "zz', 1) if '": "' in rec.answer else rec.answer.replace("1", "7")
        for k, (text, label) in enumerate([(rec.answer, 0), (wrong, 1), (rec.answer, 0), (wrong + "", 1)]):
            lines.append(json.dumps({"id": f"{g}-{k}", "group": g, "label": label, "text": text,
                                     "context": [rec.prompt + "\n", ""], "score": 0.5}))
    path.write_text("\n".join(lines) + "\n")
    return path


def stage(tiny_run, samples_file, out, *extra):
    return cli("train", "--stage", "value", "--samples", str(samples_file), "--init", str(tiny_run),
               "--out", str(out), "--max-iters", "30", "--eval-interval", "10", "--json", *extra)


def test_stage_trains_the_head_and_leaves_the_frozen_trunk_bit_identical(tiny_run, samples_file, tmp_path):
    r = stage(tiny_run, samples_file, tmp_path / "v")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["data"]["overlap"] == 0 and doc["data"]["pairs"]["train"] > 0 and doc["data"]["pairs"]["val"] > 0
    assert doc["data"]["groups"] == {"train": 32, "val": 8}
    e = doc["final_eval"]
    assert 0 <= e["train"]["pairwise_acc"] <= 1 and e["gap"] == pytest.approx(
        e["train"]["pairwise_acc"] - e["val"]["pairwise_acc"])
    before, after = load(tiny_run), load(tmp_path / "v")
    assert after.config.model.value_head and not before.config.model.value_head
    for k, v in before.model_state.items():
        assert torch.equal(v, after.model_state[k]), k  # the frozen trunk did not move
    heads = [k for k in after.model_state if k.startswith("value_head.")]
    assert heads and all(k not in before.model_state for k in heads)
    logged = [json.loads(x) for x in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [10, 20, 30]


def test_stage_stopped_by_a_signal_saves_the_head_it_has(tiny_run, samples_file, tmp_path, monkeypatch):
    import os
    import signal

    import cdt.value_stage as value_stage

    real, calls = value_stage.pairwise_loss, []

    def signal_at_step_7(*a):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would: the stage's handler takes it
        return real(*a)

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(value_stage, "pairwise_loss", signal_at_step_7)
    r = stage(tiny_run, samples_file, tmp_path / "cut")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: stopped by SIGINT at step 7 of 30; the value head as it was then is saved "
                                f"in {tmp_path / 'cut' / 'checkpoint.pt'}")
    doc = json.loads(r.stdout)
    assert (doc["steps"], doc["max_iters"], doc["interrupted"]) == (7, 30, "SIGINT")
    assert doc["final_eval"]["step"] == 7 and signal.getsignal(signal.SIGINT) == handler  # handler given back
    logged = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [7]  # evaluated where it stopped (the interval is 10)

    monkeypatch.setattr(value_stage, "pairwise_loss", real)
    assert stage(tiny_run, samples_file, tmp_path / "seven", "--max-iters", "7").exit_code == 0
    cut, seven = load(tmp_path / "cut"), load(tmp_path / "seven")
    assert cut.extra["value_stage"]["steps"] == 7
    for k, v in seven.model_state.items():  # the same head as a run of 7 steps
        assert torch.equal(v, cut.model_state[k]), k


def test_pointwise_and_unfrozen_trunk(tiny_run, samples_file, tmp_path):
    r = stage(tiny_run, samples_file, tmp_path / "p", "--loss", "pointwise", "--train-trunk")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["loss"] == "pointwise" and doc["freeze_trunk"] is False
    before, after = load(tiny_run), load(tmp_path / "p")
    assert any(not torch.equal(v, after.model_state[k]) for k, v in before.model_state.items())


def test_value_head_scores_through_calibrate(tiny_run, samples_file, tmp_path):
    assert stage(tiny_run, samples_file, tmp_path / "v").exit_code == 0
    r = cli("calibrate", "--checkpoint", str(tmp_path / "v"), "--n-samples", "6", "--steps", "2",
            "--score-source", "value-head", "--out", str(tmp_path / "s.jsonl"), "--json")
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert all(x["score"] == x["value"] and "score_critic" in x for x in lines)
    assert json.loads(r.stdout)["passes"]["value"] == 1
    assert_one_line_error(cli("calibrate", "--checkpoint", str(tiny_run), "--n-samples", "2",
                              "--score-source", "value-head"), 1, "needs a checkpoint with a value head")


def test_stage_bad_input(tiny_run, samples_file, tmp_path):
    assert_one_line_error(cli("train", "--stage", "value", "--init", str(tiny_run)), 2,
                          "needs --samples")
    only_wrong = tmp_path / "wrong.jsonl"
    only_wrong.write_text("".join(json.dumps({"group": g, "label": 1, "text": "x", "context": ["q", ""]}) + "\n"
                                  for g in range(6)))
    assert_one_line_error(stage(tiny_run, only_wrong, tmp_path / "w"), 1, "has both a right and a wrong answer")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"group": 1, "label": 0}\n')
    assert_one_line_error(stage(tiny_run, bad, tmp_path / "b"), 1, "line 1: needs group, label, text and context")
    assert_one_line_error(cli("train", "--stage", "value", "--samples", str(samples_file),
                              "--init", str(tiny_run), "--out", str(tiny_run)), 1, "already holds")
    assert_one_line_error(cli("train", "--stage", "judge"), 2, "unknown stage")
    # a flag of the other stage is refused, not silently dropped, and nothing is written
    assert_one_line_error(stage(tiny_run, samples_file, tmp_path / "o", "--optimizer", "adamw", "--compile"), 2,
                          "--optimizer, --compile: not used by --stage value")
    assert_one_line_error(cli("train", "--preset", "tiny", "--out", str(tmp_path / "g"),
                              "--samples", str(samples_file)), 2,
                          "--samples: not used by --stage generator; leave it out")
    assert_one_line_error(cli("train", "--preset", "tiny", "--out", str(tmp_path / "g"),
                              "--train-trunk"), 2,
                          "--train-trunk and --trust-remote-code need --backbone hf:PATH")  # the generator's own trunk
    assert_one_line_error(stage(tiny_run, samples_file, tmp_path / "o", "--freeze-trunk", "--train-trunk"), 2,
                          "give at most one of --freeze-trunk and --train-trunk")
    assert not (tmp_path / "o").exists() and not (tmp_path / "g").exists()
    with pytest.raises(CdtError, match="not found"):
        load_samples(tmp_path / "missing.jsonl")
