"""`cdt calibrate` as a library: the shared sampler and artifact builder, scores, map, fits."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cdt import calibration_map
from cdt.calibrate import calibrate, sample_scores
from cdt.checkpoint import load
from cdt.errors import CdtError, UsageError
from cdt.rng import seed_for
from cdt.sampling.heldout import load_heldout
from cdt.sampling.loop import generate
from cdt.settings import CalibrateSettings, SampleConfig, from_flags

from tests.helpers import dead_pid, left_behind


def settings(**flags) -> CalibrateSettings:
    return from_flags(CalibrateSettings, **flags)


def run(tiny_run, tmp_path, **kw):
    cfg = from_flags(CalibrateSettings, **{"n_samples": 12, "steps": 3, "batch_size": 5, "device": "cpu", **kw})
    path = tmp_path / "scores.jsonl"
    result = calibrate(load(tiny_run), cfg, path, tmp_path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return result, lines


def test_scores_equal_an_independent_generation_and_critic_pass(tiny_run, tmp_path):
    result, lines = run(tiny_run, tmp_path)
    assert len(lines) == 12 and result.n_samples == 12
    ckpt = load(tiny_run)
    model = ckpt.build_model()
    held = load_heldout(ckpt, 12)
    i = 7  # regenerate sample 7 alone, through the public sampler, with its seed
    gen = generate(model, held.template[i : i + 1], held.protected[i : i + 1],
                   SampleConfig(steps=3, policy="critic"), row_seeds=[seed_for(0, i, 0)])
    with torch.no_grad():
        probs = torch.sigmoid(model.critic_logits(model(gen.tokens)))[0]
    region = held.region(i, i + 1)[0]
    p = probs[region].double().numpy()
    wrong = (gen.tokens[0] != held.clean[i])[region]
    rec = lines[i]
    assert rec["id"] == f"{i}-0" and rec["group"] == i
    assert rec["score"] == pytest.approx(np.sort(p)[::-1][:5].mean(), abs=1e-6)
    assert rec["score_max"] == pytest.approx(p.max(), abs=1e-6)
    assert rec["wrong_tokens"] == int(wrong.sum()) and rec["tokens"] == int(region.sum())
    assert rec["label"] == int(bool(wrong.any()) or not rec["json_valid"] or not rec["name_ok"] or bool(rec["wrong_fields"]))
    assert rec["reference"] == held.records[i].answer
    assert result.tokens.n == sum(r["tokens"] for r in lines)
    assert result.tokens.n_wrong == sum(r["wrong_tokens"] for r in lines)


def test_results_do_not_depend_on_batch_size(tiny_run, tmp_path):
    _, a = run(tiny_run, tmp_path / "a", batch_size=12)
    _, b = run(tiny_run, tmp_path / "b", batch_size=5)
    # the same generations and labels; a batched matmul may round a critic probability's last bits differently
    assert [{k: v for k, v in r.items() if not isinstance(v, float)} for r in a] == \
           [{k: v for k, v in r.items() if not isinstance(v, float)} for r in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if isinstance(v, float)} == pytest.approx(
            {k: v for k, v in y.items() if isinstance(v, float)}, rel=1e-6)


def test_samples_per_prompt_draws_distinct_generations(tiny_run, tmp_path):
    result, lines = run(tiny_run, tmp_path, n_samples=7, samples_per_prompt=3)
    assert result.n_prompts == 3
    assert [r["id"] for r in lines] == ["0-0", "0-1", "0-2", "1-0", "1-1", "1-2", "2-0"]
    assert [r["group"] for r in lines] == [0, 0, 0, 1, 1, 1, 2]
    assert len({r["text"] for r in lines[:3]}) > 1  # seeded per draw


def test_step_mode_scores_only_the_filled_positions(tiny_run, tmp_path):
    result, lines = run(tiny_run, tmp_path, mode="step", n_samples=16)
    assert result.mode == "step" and result.passes == {"generator": 4, "critic": 4}  # one of each per batch
    answer_tokens = int(load_heldout(load(tiny_run), 16).region().sum())
    assert 0 < result.tokens.n < answer_tokens  # only the positions masked at t are judged
    assert result.tokens.n == sum(r["tokens"] for r in lines)
    cmap = calibration_map.load(tmp_path)  # one training-style step: no sampler to compare a run with
    assert cmap.info["mode"] == "step" and cmap.info["sampler"] is None
    greedy = SampleConfig(steps=3, temperature=0.0, policy="critic-calibrated")
    assert calibration_map.for_sampler(tmp_path, greedy)[1] is None


def test_map_is_written_and_used_by_critic_calibrated(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())
    calibrated = SampleConfig(steps=2, policy="critic-calibrated")
    cmap, warning = calibration_map.for_sampler(run_dir, calibrated)
    assert cmap is None and "run cdt calibrate first" in warning
    result = calibrate(load(run_dir), from_flags(CalibrateSettings, n_samples=8, steps=2), run_dir / "s.jsonl", run_dir)
    cmap, warning = calibration_map.for_sampler(run_dir, calibrated)
    assert warning is None and cmap.kind == "buckets" and result.map_path == str(run_dir / "calibration.json")
    # every sampler setting but the policy (the map's user has its own) and the seed (it only draws)
    assert cmap.info["sampler"] == {k: v for k, v in SampleConfig(steps=2).to_dict().items() if k not in ("policy", "seed")}
    assert cmap.info["masking"] == "answer" and cmap.info["policy"] == "critic"
    other = SampleConfig(steps=2, temperature=0.0, schedule="power:4", policy="critic-calibrated", seed=9)
    _, warning = calibration_map.for_sampler(run_dir, other)
    assert "temperature 1.0 (now 0.0)" in warning and "schedule 'linear' (now 'power:4')" in warning
    assert "steps" not in warning and "seed" not in warning
    eight = SampleConfig(steps=8, policy="critic-calibrated")  # eval: several step counts, compared without them
    assert calibration_map.for_sampler(run_dir, eight)[1] is not None
    assert calibration_map.for_sampler(run_dir, eight, with_steps=False)[1] is None
    assert calibration_map.for_sampler(run_dir, SampleConfig(steps=2, policy="critic")) == (None, None)
    older = {"sampler": {"steps": 2, "temperature": 1.0, "spread": False, "schedule": "linear"}}  # before 0.1.0
    for info in ({}, {"sampler": "linear"}, {"sampler": None}, older):  # maps of older versions, or edited by hand
        calibration_map.save(run_dir, calibration_map.CalibrationMap("buckets", [0.0, 1.0], [0.0, 1.0], info=info))
        assert calibration_map.for_sampler(run_dir, replace(calibrated, commit="lock"))[1] is None
        assert calibration_map.load(run_dir).info == info
    filled = [b for b in result.tokens.buckets if b.count]
    assert cmap(np.array([filled[0].mean_prob]))[0] == pytest.approx(filled[0].error_rate)


def test_fits_report_ece_before_and_after(tiny_run, tmp_path):
    for kind in ("isotonic", "temperature"):  # platt: below (the tiny model's critic is too weak for its slope)
        result, _ = run(tiny_run, tmp_path / kind, fit=kind, n_samples=10, bootstrap=50)
        assert result.fit["kind"] == kind and result.fit["ece_before"] is not None and result.fit["folds"] == 5
        assert calibration_map.load(tmp_path / kind).kind == kind
        assert result.fit["bias"] is None
        lo, hi = result.intervals["ece_after"]
        assert lo <= hi and result.intervals["resamples"] == 50
    iso = calibration_map.load(tmp_path / "isotonic")
    assert all(b >= a for a, b in zip(iso.ys, iso.ys[1:]))  # isotonic = non-decreasing


def test_cross_fitting_never_scores_a_map_on_what_it_saw():
    """Labels that are pure noise: an isotonic map fitted and scored on the same tokens looks calibrated
    (it memorises them); cross-fitted, the ECE after is what a new prompt would see, and larger."""
    from cdt.calibrate import _cross_fit
    from cdt.metrics import Reliability

    rng = np.random.default_rng(0)
    cfg = settings(fit="isotonic", buckets=20)
    stats, folds = Reliability(20), [Reliability(20) for _ in range(5)]
    for prompt in range(100):
        p = rng.random(30)
        y = rng.random(30) < 0.3
        stats.add(p, y)
        folds[prompt % 5].add(p, y)
    doc, cmap, maps = _cross_fit(cfg, stats, folds, {})
    p, y, w = stats.weighted_points()
    in_sample = Reliability(20)
    in_sample.add(np.repeat(cmap(p), w), np.repeat(y, w))
    assert len(maps) == 5 and doc["ece_after"] > 1.5 * in_sample.report().ece
    # each fold's map is the one fitted on the four others (an independent fit: the same map)
    rest = Reliability(20)
    for fold in folds[1:]:
        rest.merge(fold)
    again = calibration_map.fit("isotonic", *rest.weighted_points())
    assert np.allclose(maps[0](np.linspace(0, 1, 11)), again(np.linspace(0, 1, 11)))


def test_platt_recovers_a_known_miscalibration():
    """True P(wrong) = sigmoid(2 logit(p) - 1): Platt finds T = 0.5 and bias -1 (the maximum-likelihood fit,
    checked against scipy's optimiser on the same log loss)."""
    from scipy.optimize import minimize
    from scipy.special import expit, logit

    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 20_000)
    y = (rng.random(20_000) < expit(2 * logit(p) - 1)).astype(int)
    m = calibration_map.fit("platt", p, y, np.ones_like(p))
    loss = lambda ab: -np.mean(y * np.log(expit(ab[0] * logit(p) + ab[1])) +  # noqa: E731
                               (1 - y) * np.log(1 - expit(ab[0] * logit(p) + ab[1])))
    a, b = minimize(loss, [1.0, 0.0]).x
    assert 1 / m.temperature == pytest.approx(a, abs=1e-3) and m.bias == pytest.approx(b, abs=1e-3)
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-1.0, abs=0.1)
    assert calibration_map.CalibrationMap.from_dict(m.to_dict())(0.3) == pytest.approx(m(0.3))


def test_calibration_map_by_hand():
    m = calibration_map.CalibrationMap("buckets", [0.1, 0.5, 0.9], [0.0, 0.4, 1.0])
    assert m(np.array([0.0, 0.3, 0.5, 0.95])).tolist() == pytest.approx([0.0, 0.2, 0.4, 1.0])
    t = calibration_map.CalibrationMap("temperature", temperature=2.0)
    assert float(t(torch.tensor([0.5]))[0]) == pytest.approx(0.5)
    z = np.log(0.9 / 0.1)
    assert t(np.array([0.9]))[0] == pytest.approx(1 / (1 + np.exp(-z / 2)))
    with pytest.raises(ValueError):
        calibration_map.CalibrationMap.from_dict({"kind": "buckets", "xs": [0.5, 0.1], "ys": [0, 1]})


def test_broken_map_file_is_a_clear_error(tmp_path):
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(CdtError, match="not a valid calibration map"):
        calibration_map.load(tmp_path)


def test_sample_scores_aggregates():
    s = sample_scores(np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2]), top=5)
    assert s["score"] == pytest.approx((0.9 + 0.7 + 0.5 + 0.3 + 0.2) / 5)
    assert s["score_max"] == 0.9 and s["score_mean"] == pytest.approx(2.7 / 6)


def test_sample_scores_depend_on_the_values_alone():
    """The same float32 probabilities in another order, or at another offset in memory (a row elsewhere in
    its batch), give bit-identical scores; the mean is the exactly rounded one."""
    from fractions import Fraction

    probs = np.random.default_rng(0).uniform(0, 1, 301).astype(np.float32)
    base = sample_scores(probs, top=5)
    wider = np.zeros(1000, np.float32)
    for offset in (1, 3, 7, 16):
        wider[offset:offset + probs.size] = probs
        assert sample_scores(wider[offset:offset + probs.size], top=5) == base
    for seed in range(5):
        assert sample_scores(np.random.default_rng(seed).permutation(probs), top=5) == base
    exact = sum(Fraction(float(p)) for p in probs) / probs.size
    assert base["score_mean"] == float(exact)


@pytest.mark.parametrize("kw, fragment", [({"n_samples": 0}, "--n-samples"), ({"mode": "dream"}, "unknown mode"),
                                          ({"binning": "log"}, "unknown binning"), ({"fit": "beta"}, "unknown fit"),
                                          ({"samples_per_prompt": 0}, "--samples-per-prompt"),
                                          ({"bootstrap": -1}, "--bootstrap"), ({"confidence": 1.0}, "--confidence")])
def test_bad_settings(kw, fragment):
    with pytest.raises(UsageError, match=fragment):
        from_flags(CalibrateSettings, **kw).validate()


def test_interrupted_run_keeps_what_it_scored(tiny_run, tmp_path, monkeypatch):
    calls = []

    def stop_after_first(k):
        calls.append(k)
        raise KeyboardInterrupt

    with pytest.raises(CdtError, match="4 samples scored so far"):
        calibrate(load(tiny_run), settings(n_samples=10, steps=2, batch_size=4), tmp_path / "s.jsonl", tmp_path,
                  on_samples=stop_after_first)
    assert not (tmp_path / "s.jsonl").exists()
    partial = (tmp_path / "s.jsonl.partial").read_text().splitlines()
    assert len(partial) == 4 and json.loads(partial[0])["id"] == "0-0"

    def stop_at_once(*a, **k):
        raise KeyboardInterrupt

    import cdt.sampling.infill

    monkeypatch.setattr(cdt.sampling.infill, "generate", stop_at_once)
    with pytest.raises(CdtError, match="interrupted before the first sample was scored"):
        calibrate(load(tiny_run), settings(n_samples=10, steps=2, batch_size=4), tmp_path / "s.jsonl",
                  tmp_path)
    monkeypatch.undo()  # the rerun stopped before its first sample left the earlier partial file as it was
    assert (tmp_path / "s.jsonl.partial").read_text().splitlines() == partial
    assert sorted(p.name for p in tmp_path.iterdir() if "jsonl" in p.name) == ["s.jsonl.partial"]  # no .writing
    calibrate(load(tiny_run), settings(n_samples=6, steps=2, batch_size=4), tmp_path / "s.jsonl", tmp_path)
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 6  # a complete rerun writes the file itself


def test_score_writer_keeps_an_earlier_partial_until_it_has_lines_of_its_own(tmp_path):
    from cdt.scores import ScoreWriter

    path = tmp_path / "s.jsonl"
    first = ScoreWriter(path)
    first.write({"id": "a"})
    assert first.close(complete=False) == tmp_path / "s.jsonl.partial"
    assert ScoreWriter(path).close(complete=False) is None  # nothing written: the earlier partial stays
    assert (tmp_path / "s.jsonl.partial").read_text() == '{"id": "a"}\n'
    third = ScoreWriter(path)
    assert (tmp_path / "s.jsonl.partial").exists()  # opening does not touch it either
    third.write({"id": "b"})
    third.write({"id": "c"})
    third.close(complete=False)
    assert len((tmp_path / "s.jsonl.partial").read_text().splitlines()) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["s.jsonl.partial"]


def test_what_a_hard_kill_left_becomes_the_partial_file(tmp_path):
    import os

    from cdt.scores import ScoreWriter, recover_stale

    path = tmp_path / "s.jsonl"
    dead = dead_pid()
    left = left_behind(path, dead, '{"id": "0-0"}\n{"id": "1-0"}\n{"id": "2', age=300)  # cut mid-line by the kill
    alive = left_behind(path, os.getppid(), '{"id": "x"}\n', age=300)  # its process still runs
    fresh = left_behind(path, dead_pid(), '{"id": "y"}\n', age=0)  # changed a moment ago: maybe another host's
    writer = ScoreWriter(path)
    assert writer.recovered == (f"a run that was killed (process {dead}) left 2 lines in {left.name}; "
                                f"they are kept in {path}.partial")
    assert (tmp_path / "s.jsonl.partial").read_text() == '{"id": "0-0"}\n{"id": "1-0"}\n'  # whole lines only
    assert not left.exists() and alive.exists() and fresh.exists()
    writer.write({"id": "z"})
    writer.close()
    assert recover_stale(path) is None  # nothing left to tidy

    # an older leftover than the partial a later Ctrl-C kept is removed; one with no whole line silently
    older = left_behind(path, dead_pid(), '{"id": "old"}\n', age=3600)
    cut = left_behind(path, dead_pid(), '{"id": "old"}\n{"id": "cu', age=3600)  # cutting it must not make it newer
    assert "removed 2 unfinished file(s)" in recover_stale(path) and not older.exists() and not cut.exists()
    assert (tmp_path / "s.jsonl.partial").read_text() == '{"id": "0-0"}\n{"id": "1-0"}\n'
    os.utime(tmp_path / "s.jsonl.partial", (0, 0))  # now the partial is the older one
    empty = left_behind(path, dead_pid(), '{"id": "cut', age=300)
    newer = left_behind(path, dead_pid(), '{"id": "new"}\n', age=120)
    assert "left 1 line in" in recover_stale(path) and not empty.exists() and not newer.exists()
    assert (tmp_path / "s.jsonl.partial").read_text() == '{"id": "new"}\n'
    nothing = left_behind(path, dead_pid(), "", age=300)
    os.unlink(tmp_path / "s.jsonl.partial")
    assert recover_stale(path) is None and not nothing.exists() and not (tmp_path / "s.jsonl.partial").exists()

