"""`cdt calibrate` and `cdt sweep-tau` through the real command line, end to end."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import aged, assert_one_line_error, cdt_process, cli


@pytest.fixture(scope="module")
def calibrated(tiny_run, tmp_path_factory):
    """calibrate on the shared tiny checkpoint, scores written outside the run directory."""
    out = tmp_path_factory.mktemp("cal")
    result = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 24, "--steps", 3, "--buckets", 10,
                 "--out", out / "scores.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), out / "scores.jsonl"


def test_calibrate_json_report(calibrated, tiny_run):
    doc, scores = calibrated
    assert doc["n_samples"] == 24 and doc["policy"] == "critic" and doc["steps"] == 3
    assert len(doc["tokens"]["buckets"]) == 10 and "more likely wrong" in doc["critic_polarity"]
    assert sum(b["count"] for b in doc["tokens"]["buckets"]) == doc["tokens"]["n"]
    assert doc["scores_path"] == str(scores) and len(scores.read_text().splitlines()) == 24
    assert json.loads((tiny_run / "calibration_report.json").read_text())["n_samples"] == 24
    assert (tiny_run / "calibration.json").is_file()


def test_calibrate_scores_feed_sweep_tau(calibrated, tmp_path):
    _, scores = calibrated
    result = cli("sweep-tau", scores, "--out-dir", tmp_path / "params", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    lines = [json.loads(x) for x in scores.read_text().splitlines()]
    assert doc["n"] == 24 and doc["n_wrong"] == sum(r["label"] for r in lines)
    assert doc["model"] == lines[0]["model"]
    saved = json.loads(open(doc["report_path"]).read())
    assert saved["chosen"] == doc["chosen"]


def test_calibrate_table_and_next_command(tiny_run, tmp_path):
    result = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 6, "--steps", 2, "--binning", "quantile",
                 "--out", tmp_path / "s.jsonl", "--plot", tmp_path / "rel.png")
    assert result.exit_code == 0, result.stderr
    assert "critic reliability" in result.stdout and "ECE" in result.stdout
    assert f"cdt sweep-tau {tmp_path / 's.jsonl'}" in result.stdout
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrate_spread_reaches_the_generations(tiny_run, tmp_path, monkeypatch):
    import cdt.sampling.infill
    import cdt.sampling.loop

    seen = []

    def spy(model, ids, protected, cfg, **kw):
        seen.append(cfg.spread)
        return cdt.sampling.loop.generate(model, ids, protected, cfg, **kw)

    monkeypatch.setattr(cdt.sampling.infill, "generate", spy)
    result = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 4, "--steps", 3, "--spread",
                 "--out", tmp_path / "s.jsonl", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["spread"] is True and seen == [True]


def test_calibrate_schedule_reaches_the_generations(tiny_run, tmp_path, monkeypatch):
    import cdt.sampling.infill
    import cdt.sampling.loop

    seen = []

    def spy(model, ids, protected, cfg, **kw):
        gen = cdt.sampling.loop.generate(model, ids, protected, cfg, **kw)
        seen.append((cfg.schedule, gen.passes["generator"]))
        return gen

    monkeypatch.setattr(cdt.sampling.infill, "generate", spy)
    for schedule in ("linear", "power:4"):
        result = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 4, "--steps", 8, "--schedule", schedule,
                     "--out", tmp_path / f"{schedule}.jsonl", "--json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["settings"]["schedule"] == schedule
    (linear, linear_passes), (power, power_passes) = seen
    assert (linear, power) == ("linear", "power:4") and linear_passes == 8 and power_passes < 8  # done early


def test_calibrate_again_says_what_it_replaced(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(tiny_run / "checkpoint.pt", run_dir / "checkpoint.pt")
    first = cli("calibrate", "--checkpoint", run_dir, "--n-samples", 4, "--steps", 2, "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["replaced"] == [] and "replaced" not in first.stderr
    again = cli("calibrate", "--checkpoint", run_dir, "--n-samples", 4, "--steps", 2, "--json")
    assert again.exit_code == 0, again.stderr
    names = [str(run_dir / n) for n in ("calibration_scores.jsonl", "calibration_report.json", "calibration.json")]
    assert json.loads(again.stdout)["replaced"] == names
    assert "replaced the earlier" in again.stderr and "--out PATH" in again.stderr
    apart = cli("calibrate", "--checkpoint", run_dir, "--n-samples", 4, "--steps", 2, "--out", tmp_path / "s.jsonl")
    assert apart.exit_code == 0, apart.stderr
    message = apart.stderr[apart.stderr.index("replaced the earlier"):]
    assert names[0] not in message and names[1] in message and "--out PATH" not in message
    assert json.loads((run_dir / "calibration_report.json").read_text())["replaced"] == names[1:]


def test_plot_without_matplotlib_fails_before_any_work(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 4, "--out", tmp_path / "s.jsonl",
                 "--plot", tmp_path / "p.png")
    assert_one_line_error(result, 1, "pip install 'cdt[plot]'")
    assert not (tmp_path / "s.jsonl").exists()


def test_calibrated_policy_warns_without_a_map(tmp_path, tiny_run):
    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())
    result = cli("sample", "--checkpoint", run_dir, "--length", 8, "--steps", 2, "--policy", "critic-calibrated")
    assert result.exit_code == 0 and "falls back to the raw critic" in result.stderr
    assert len(result.stdout.splitlines()) == 1
    scaffolded = cli("sample", "--checkpoint", run_dir, "--schema", "set_alarm", "--prompt", "Wake me at 7",
                     "--steps", 2, "--policy", "critic-calibrated")
    assert scaffolded.exit_code == 0 and "falls back to the raw critic" in scaffolded.stderr


def test_calibrated_policy_warns_when_the_map_came_from_another_sampler(tmp_path, tiny_run):
    run_dir = tmp_path / "fresh"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())
    made = cli("calibrate", "--checkpoint", run_dir, "--n-samples", 4, "--steps", 2, "--out", tmp_path / "s.jsonl")
    assert made.exit_code == 0, made.stderr
    same = cli("sample", "--checkpoint", run_dir, "--length", 8, "--steps", 2, "--policy", "critic-calibrated")
    assert same.exit_code == 0 and "warning" not in same.stderr
    other = cli("sample", "--checkpoint", run_dir, "--length", 8, "--steps", 3, "--policy", "critic-calibrated",
                "--temperature", 0, "--spread")
    assert other.exit_code == 0 and len(other.stdout.splitlines()) == 1
    assert "measured with another sampler: steps 2 (now 3), temperature 1.0 (now 0.0), spread False (now True);" \
        in other.stderr.replace("\n", " ")
    scaffolded = cli("sample", "--checkpoint", run_dir, "--schema", "set_alarm", "--prompt", "Wake me at 7",
                     "--steps", 3, "--policy", "critic-calibrated")
    assert scaffolded.exit_code == 0, scaffolded.stderr
    assert scaffolded.stderr.replace("\n", " ").count("another sampler: steps 2 (now 3)") == 1
    from cdt import checkpoint, scaffold
    from cdt.settings import SampleConfig
    from cdt.scaffold.sample import sample_schema
    library = sample_schema(checkpoint.load(run_dir), scaffold.builtin("set_alarm"), ["Wake me at 7"],
                            SampleConfig(steps=3, policy="critic-calibrated"))
    assert len(library.samples) == 1 and library.generation.tokens.shape[0] == 1
    assert len(library.warnings) == 2 and "trained without scaffolds" in library.warnings[0]
    assert "steps 2 (now 3)" in library.warnings[1]
    evaluated = cli("eval", "--checkpoint", run_dir, "--n", 2, "--steps", 2, "--policies", "critic-calibrated",
                    "--schedule", "cosine")
    assert evaluated.exit_code == 0, evaluated.stderr
    flat = evaluated.stderr.replace("\n", " ")
    assert "schedule 'linear' (now 'cosine')" in flat and "steps" not in flat.split("another sampler")[1][:30]


@pytest.mark.parametrize("args, code, fragment", [
    (["--n-samples", "0"], 2, "--n-samples"),
    (["--mode", "dream"], 2, "unknown mode"),
    (["--policy", "oracle"], 2, "unknown policy"),
    (["--fit", "beta"], 2, "unknown fit"),
    (["--schedule", "power:-2"], 2, "unknown schedule 'power:-2'"),
])
def test_calibrate_bad_input(tiny_run, args, code, fragment):
    result = cli("calibrate", "--checkpoint", tiny_run, *args)
    if args[0] == "--n-samples":  # rejected by the flag parser itself
        assert result.exit_code == 2 and "Traceback" not in result.output and "--n-samples" in result.output
    else:
        assert_one_line_error(result, code, fragment)


def test_calibrate_missing_checkpoint(tmp_path):
    assert_one_line_error(cli("calibrate", "--checkpoint", tmp_path / "nope"), 1, "no checkpoint at")


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("lines, fragment", [
    ([], "holds no samples"),
    (['{"score": 0.1, "label": 0}', "{oops"], "line 2: not valid JSON"),
    (['{"score": 0.1}'], "line 1: missing key 'label'"),
    (['{"score": NaN, "label": 1}'], "NaN and infinite"),
    (['{"score": Infinity, "label": 1}'], "NaN and infinite"),
    (['{"score": "high", "label": 1}'], "must be a number"),
    (['{"score": 0.2, "label": 2}'], "must be 0 or 1"),
    (["[0.1, 1]"], "expected a JSON object"),
])
def test_sweep_tau_bad_files(tmp_path, lines, fragment):
    f = write(tmp_path / "s.jsonl", lines)
    assert_one_line_error(cli("sweep-tau", f, "--out-dir", tmp_path / "p"), 1, fragment)
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


def test_sweep_tau_bad_flags(tmp_path):
    f = write(tmp_path / "s.jsonl", ['{"score": 0.1, "label": 0}', '{"score": 0.9, "label": 1}'])
    assert_one_line_error(cli("sweep-tau", f, "--recall-target", "0"), 2, "(0, 1]")
    assert_one_line_error(cli("sweep-tau", f, "--recall-target", "1.5"), 2, "(0, 1]")
    assert_one_line_error(cli("sweep-tau", f, "--direction", "up"), 2, "unknown direction")
    assert_one_line_error(cli("sweep-tau", f, "--tau-start", "0.5", "--tau-stop", "0.1", "--tau-step", "0.1"), 2,
                          "τ range")
    assert_one_line_error(cli("sweep-tau", tmp_path / "missing.jsonl"), 1, "scores file not found")


def test_sweep_tau_single_class_warns_and_still_sweeps(tmp_path):
    f = write(tmp_path / "s.jsonl", [json.dumps({"id": i, "score": i / 10, "label": 0}) for i in range(10)])
    result = cli("sweep-tau", f, "--out-dir", tmp_path / "p", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["auroc"] is None and doc["candidates"] == 10 and "one class" in result.stderr


def test_sweep_tau_reads_stdin_and_never_overwrites(tmp_path):
    lines = [json.dumps({"id": i, "score": (i * 7 % 10) / 10, "label": int(i % 3 == 0)}) for i in range(30)]
    stdin = "\n".join(lines) + "\n"
    paths = set()
    for _ in range(3):  # same second, same name stem
        result = cli("sweep-tau", "-", "--out-dir", tmp_path, "--model", "m/x", "--json", input=stdin)
        assert result.exit_code == 0, result.stderr
        paths.add(json.loads(result.stdout)["report_path"])
    assert len(paths) == 3 and len(list(tmp_path.iterdir())) == 3
    assert all(os.path.basename(p).startswith("m-x_") and "_n30" in p for p in paths)


def test_sweep_tau_grids_and_custom_keys(tmp_path):
    lines = [json.dumps({"id": i, "risk": (i * 13 % 50) / 50, "bad": i % 4 == 0}) for i in range(50)]
    f = write(tmp_path / "s.jsonl", lines)
    q = cli("sweep-tau", f, "--score-key", "risk", "--label-key", "bad", "--grid", "quantile", "--n-tau", 5,
            "--q-lo", 0.1, "--q-hi", 0.9, "--out-dir", tmp_path / "p", "--json")
    assert q.exit_code == 0, q.stderr
    assert json.loads(q.stdout)["candidates"] <= 5
    r = cli("sweep-tau", f, "--score-key", "risk", "--label-key", "bad", "--tau-start", 0, "--tau-stop", 1,
            "--tau-step", 0.25, "--out-dir", tmp_path / "p", "--json")
    doc = json.loads(r.stdout)
    assert doc["grid"] == "range" and [p["tau"] for p in doc["sweep"]] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_sweep_tau_as_a_subprocess(tmp_path):
    f = write(tmp_path / "s.jsonl", [json.dumps({"id": i, "score": i / 20, "label": int(i > 12)}) for i in range(20)])
    proc = cdt_process("sweep-tau", f, "--out-dir", tmp_path / "p", "--recall-target", "1.0", "--confidence", "0")
    assert proc.returncode == 0, proc.stderr
    assert "chosen τ" in proc.stdout and "0.65: precision 1.000 · recall 1.000" in proc.stdout
    assert "promise  none (--confidence 0)" in proc.stdout and proc.stderr == ""
    strict = cli("sweep-tau", f, "--out-dir", tmp_path / "p", "--strict", "--bootstrap", "0")
    assert strict.exit_code == 1 and "needs at least 29 wrong samples (independent units), and there are 7" \
        in strict.stderr
    assert "in-sample τ" in strict.stdout and len(list((tmp_path / "p").iterdir())) == 2  # the report is kept


def test_sweep_tau_promises_and_intervals_in_json(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.3).astype(int)
    s = np.clip(np.where(y == 1, rng.normal(0.62, 0.15, 600), rng.normal(0.45, 0.15, 600)), 0, 1)
    lines = [json.dumps({"id": i, "group": i // 2, "score": float(s[i]), "label": int(y[i])}) for i in range(600)]
    f = write(tmp_path / "s.jsonl", lines)
    r = cli("sweep-tau", f, "--out-dir", tmp_path / "p", "--accuracy-target", "0.8", "--bootstrap", "200", "--json",
            "--strict")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["direction"] == "ge" and doc["chosen"]["tau"] <= doc["in_sample"]["tau"]  # the promise costs τ
    g = doc["guarantee"]
    assert g["status"] == "certified" and g["n_units"] == 300 and g["recall_bound"] >= 0.9
    assert doc["acceptance"]["status"] == "certified" and doc["acceptance"]["coverage"] > 0
    iv = doc["intervals"]
    assert iv["resamples"] == 200 and iv["resampled"].startswith("groups")
    for key in ("auroc", "average_precision", "ece", "brier", "precision", "recall", "coverage", "accepted_accuracy"):
        assert iv[key][0] <= iv[key][1], key
    assert iv["auroc"][0] <= doc["auroc"] <= iv["auroc"][1]
    again = json.loads(cli("sweep-tau", f, "--out-dir", tmp_path / "p", "--accuracy-target", "0.8", "--bootstrap",
                           "200", "--json").stdout)
    assert again["intervals"] == iv  # seeded


def _long_calibrate_writing(tiny_run, out):
    """A real `cdt calibrate` subprocess of 10,000 samples, returned once lines reach the file it writes."""
    proc = subprocess.Popen([sys.executable, "-m", "cdt", "calibrate", "--checkpoint", str(tiny_run), "--n-samples",
                             "10000", "--samples-per-prompt", "100", "--batch-size", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    for _ in range(2400):  # wait (at most ~2 minutes)
        if proc.poll() is not None or any(p.name.endswith(".writing") and p.stat().st_size
                                          for p in out.parent.iterdir()):
            break
        time.sleep(0.05)
    return proc


def test_sigterm_to_a_real_calibrate_keeps_the_samples_it_scored(tiny_run, tmp_path):
    out = tmp_path / "s.jsonl"
    proc = _long_calibrate_writing(tiny_run, out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.startswith("error: interrupted; the ") and err.rstrip().endswith(f"samples scored so far are in {out}.partial")
    scored = int(err.split("the ")[1].split()[0])
    lines = (tmp_path / "s.jsonl.partial").read_text().splitlines()
    assert 0 < scored < 10000 and len(lines) == scored and json.loads(lines[0])["id"] == "0-0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl.partial"]


@pytest.mark.slow  # a real process killed mid-run; the library-level recovery tests run in the fast suite
def test_a_rerun_keeps_what_a_killed_calibrate_scored(tiny_run, tmp_path):
    out = tmp_path / "s.jsonl"
    proc = _long_calibrate_writing(tiny_run, out)
    proc.kill()  # SIGKILL: no handler runs, the file being written stays as it was
    proc.communicate(timeout=120)
    (left,) = [p for p in tmp_path.iterdir() if p.name.endswith(".writing")]
    assert left.name == f"s.jsonl.{proc.pid}.writing"
    written = left.read_text().count("\n")
    aged(left, 120)  # what a later run finds: untouched for over a minute
    rerun = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 3, "--steps", 2, "--out", out)
    assert rerun.exit_code == 0, rerun.stderr
    assert f"a run that was killed (process {proc.pid}) left {written} line" in rerun.stderr.replace("\n", " ")
    kept = (tmp_path / "s.jsonl.partial").read_text().splitlines()
    assert len(kept) == written > 0 and [json.loads(line)["id"] for line in kept[:2]] == ["0-0", "0-1"][: len(kept)]
    assert len(out.read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "s.jsonl.partial"]


def test_summary_says_what_each_held_out_row_had_masked(tmp_path, tiny_run):
    """toolcalls rows are prompts with their answer masked; plain-text rows have no prompt, only a masked span."""
    prompts = cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 4, "--steps", 2, "--out", tmp_path / "a.jsonl")
    assert prompts.exit_code == 0, prompts.stderr
    assert "of 4 held-out prompts" in prompts.stdout
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    trained = cli("train", "--preset", "tiny", "--max-iters", 6, "--data", text, "--out", tmp_path / "t")
    assert trained.exit_code == 0, trained.stderr
    for mask, phrase in (("span", "a span of each masked"), ("random", "random positions masked")):
        rows = cli("calibrate", "--checkpoint", tmp_path / "t", "--n-samples", 4, "--steps", 2, "--mask", mask,
                   "--out", tmp_path / f"{mask}.jsonl")
        assert rows.exit_code == 0, rows.stderr
        assert f"of 4 held-out rows, {phrase}" in rows.stdout.replace("\n", " ") and "prompts" not in rows.stdout
        doc = json.loads(cli("calibrate", "--checkpoint", tmp_path / "t", "--n-samples", 4, "--steps", 2, "--mask",
                             mask, "--out", tmp_path / f"{mask}2.jsonl", "--json").stdout)
        assert doc["masking"] == mask
