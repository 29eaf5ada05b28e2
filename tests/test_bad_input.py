"""Hostile input through the real command line: one line on stderr before any work, the right exit code,
no traceback, and nothing another run wrote is lost."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from cdt import checkpoint
from cdt.config import resolve
from cdt.rundir import OutputLock
from cdt.vocab import MASK_ID
from tests.helpers import assert_one_line_error, cdt_process, cli, evals

NO_RUN = "no/such/run"  # a checkpoint that is never read: the flag must be refused first


def run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the shared tiny run that a test may write into."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def unwritable(tmp_path) -> Path:
    """A folder this process cannot create files in (root ignores permissions, not /sys)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked
    try:
        tempfile.TemporaryFile(dir="/sys").close()
    except OSError:
        return Path("/sys")
    pytest.skip("no folder here refuses this user's writes")


# flags, paths and sizes: refused before the model loads


@pytest.mark.parametrize("args, code, fragment", [
    (["sample", "--checkpoint", NO_RUN, "--temperature", "nan"], 2, "--temperature must be a finite number, got nan"),
    (["eval", "--checkpoint", NO_RUN, "--top-p", "inf"], 2, "--top-p must be a finite number"),
    (["calibrate", "--checkpoint", NO_RUN, "--randomness", "nan"], 2, "--randomness must be a finite number"),
    (["sample", "--checkpoint", NO_RUN, "--seed", str(2**32)], 2, "--seed must be between 0 and 4294967295"),
    (["explore", "--checkpoint", NO_RUN, "--seed", "-1"], 2, "--seed must be between 0 and"),
    (["eval", "--checkpoint", NO_RUN, "--device", "tpu"], 2, "unknown --device 'tpu'"),
    (["calibrate", "--checkpoint", NO_RUN, "--plot", "rel.xyz"], 2, "--plot rel.xyz: the diagram is written as .png"),
    (["sweep-tau", "no/such/scores", "--tau-start", "0", "--tau-stop", "1", "--tau-step", "1e-9"], 2,
     "raise --tau-step"),
    (["sweep-tau", "no/such/scores", "--grid", "quantile", "--n-tau", "1000000000"], 2, "--n-tau must be at most"),
    (["sweep-tau", "no/such/scores", "--recall-target", "nan"], 2, "--recall-target must be a finite number"),
    (["train", "--seed", "-1"], 2, "--seed must be between 0 and 4294967295 (2^32 - 1), got -1"),
    (["train", "--device", "tpu"], 2, "unknown --device 'tpu'"),
    (["train", "--lr", "nan"], 2, "--lr must be a finite number"),
    (["train", "--set", "train.lr=.inf"], 2, "train.lr must be a finite number"),
    (["train", "--set", "train.seed=-5"], 2, "train.seed must be in [0, 4294967295]"),
    (["sample", "--checkpoint", NO_RUN, "--n", "abc"], 2, "Invalid value for '--n'"),
    (["sample", "--checkpoint", NO_RUN, "--bogus"], 2, "No such option: --bogus"),
    (["sample"], 2, "Missing option '--checkpoint'"),
    (["bogus"], 2, "No such command 'bogus'"),
])
def test_a_bad_value_is_one_line_before_any_work(args, code, fragment):
    assert_one_line_error(cli(*args), code, fragment)


def test_the_device_of_sample_is_checked(tiny_run):
    assert_one_line_error(cli("sample", "--checkpoint", tiny_run, "--device", "tpu"), 2, "unknown --device 'tpu'")


def test_outputs_of_the_wrong_kind_or_unwritable_are_refused_before_the_run(tiny_run, tmp_path):
    run = run_copy(tiny_run, tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("mine\n")
    assert_one_line_error(cli("calibrate", "--checkpoint", run, "--n-samples", 2, "--out", tmp_path / "adir"), 2,
                          "is a directory; give a file path")
    assert_one_line_error(cli("train", "--preset", "tiny", "--out", tmp_path / "afile"), 2,
                          "is a file; give a directory")
    assert_one_line_error(cli("sweep-tau", NO_RUN, "--out-dir", tmp_path / "afile"), 2, "is a file; give a directory")
    assert_one_line_error(cli("calibrate", "--checkpoint", run, "--out", tmp_path / "afile" / "scores.jsonl"), 2,
                          "afile is a file, not a directory")
    locked = unwritable(tmp_path)
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"id": i, "score": i / 4, "label": i % 2}) + "\n" for i in range(4)))
    for args in (["calibrate", "--checkpoint", run, "--n-samples", 2, "--out", locked / "s.jsonl"],
                 ["train", "--preset", "tiny", "--out", locked / "run"],
                 ["eval", "--checkpoint", run, "--rows", locked / "rows.jsonl"],
                 ["sweep-tau", scores, "--out-dir", locked / "reports"]):
        assert_one_line_error(cli(*args), 2, f"cannot write in {locked}")
    assert (tmp_path / "afile").read_text() == "mine\n" and not list((tmp_path / "adir").iterdir())
    assert not (run / "calibration_scores.jsonl").exists()  # nothing ran


def test_sweep_tau_refuses_a_directory_and_repeated_ids(tmp_path):
    assert_one_line_error(cli("sweep-tau", tmp_path), 1, "is a directory")
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(json.dumps({"id": i % 2, "score": 0.1 * i, "label": i % 2}) + "\n" for i in range(3)))
    assert_one_line_error(cli("sweep-tau", scores, "--out-dir", tmp_path / "out"), 1, "line 3: id 0 repeats line 1's")


def test_counts_are_bounded_by_the_split_before_the_model_loads(tiny_run, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(checkpoint.Checkpoint, "build_model", no_model)
    assert_one_line_error(cli("calibrate", "--checkpoint", tiny_run, "--n-samples", 10**9), 2,
                          "asked for 1,000,000,000 held-out rows; the validation split has 189")


def test_steps_beyond_the_positions_to_fill_are_capped_with_a_notice(tiny_run):
    result = cli("sample", "--checkpoint", tiny_run, "--steps", 100000, "--length", 10, "--json")
    assert result.exit_code == 0
    assert result.stderr.strip() == "warning: --steps 100000 is more than the 10 positions to fill; running 10 steps"
    doc = json.loads(result.stdout)
    assert doc["config"]["steps"] == 10 and doc["passes"]["generator"] <= 10


def test_explore_keeps_no_more_frames_than_positions_to_fill(tiny_run):
    from cdt.explore import open_explorer
    from cdt.settings import ExploreSettings, SampleConfig

    ex = open_explorer(tiny_run, ExploreSettings(n=2, sampler=SampleConfig(policy="critic", steps=10**5)))
    most = max(int((m.template == MASK_ID).sum()) for m in ex.materials)
    assert ex.settings.sampler.steps == most < 300 and len(ex.frames) <= most + 1
    assert ex.message == f"--steps 100000 is more than the {most} positions to fill; running {most} steps"


@pytest.mark.parametrize("command", [["eval", "--steps", "8,100000"], ["calibrate", "--steps", "100000"]])
def test_more_steps_than_a_row_has_positions_are_refused_before_the_model_loads(tiny_run, monkeypatch, command):
    def no_model(*a, **k):
        raise AssertionError("the model was built")

    monkeypatch.setattr(checkpoint.Checkpoint, "build_model", no_model)
    assert_one_line_error(cli(*command, "--checkpoint", tiny_run), 2,
                          "--steps 100000 is more than the model's block size (256)")


# checkpoints that are not what they claim


def tampered(tiny_run, tmp_path, change) -> Path:
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    change(state)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    return path


def _first_weight(state):
    state["model"][next(iter(state["model"]))] = torch.zeros(3, 3)


@pytest.mark.parametrize("change, fragment", [
    (_first_weight, "does not match its own architecture: embed.weight is (3, 3)"),
    (lambda s: s["model"].pop(next(iter(s["model"]))), "does not match its own architecture: missing embed.weight"),
    (lambda s: s.pop("vocab"), "is an incomplete cdt checkpoint: it has no 'vocab'"),
    (lambda s: s.update(step="xx"), "its step is 'xx', not a count"),
    (lambda s: s.update(config=None), "the saved config is NoneType"),
    (lambda s: s["config"]["model"].update(d_model=10**6), "the config says (99, 1000000)"),  # 12 TB if allocated
    (lambda s: s["config"]["model"].update(n_heads=5), "must split into model.n_heads"),
    (lambda s: s.update(model=[1, 2]), "is not a set of named tensors"),
])
def test_a_tampered_checkpoint_is_one_line(tiny_run, tmp_path, change, fragment):
    path = tampered(tiny_run, tmp_path, change)
    assert_one_line_error(cli("sample", "--checkpoint", path), 1, str(path), fragment)


@pytest.mark.parametrize("content", [os.urandom(4096), b"a text file\n", b""])
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    assert_one_line_error(cli("eval", "--checkpoint", path), 1, f"{path} is not a cdt checkpoint")


def test_resume_refuses_a_run_without_optimizer_state(tiny_run, tmp_path):
    def value_stage_like(s):
        s["optimizer"] = None
        s["config"]["model"]["value_head"] = True

    run = tmp_path / "value"
    run.mkdir()
    tampered(tiny_run, tmp_path, value_stage_like).rename(run / "checkpoint.pt")
    assert_one_line_error(cli("train", "--out", run, "--resume"), 1, "holds a value-stage run",
                          "train into a new --out")


# schemas


@pytest.mark.parametrize("doc, code, fragment", [
    ({"name": "t", "type": "object", "properties": {"size": {"enum": ["Größe", "klein"]}}}, 1,
     "outside the model's vocabulary: 'ö'"),
    ({"name": "t", "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}, 2,
     "required names 'b', which is not a property"),
    ({"name": "t", "type": "object", "properties": {"a": {"type": "string", "maxLength": 0}}}, 2, "has maxLength 0"),
    ({"name": "t", "type": "object", "properties": {"a": {"type": "string", "maxLength": True}}}, 2,
     "has maxLength True"),
])
def test_an_unusable_schema_is_one_line(tiny_run, tmp_path, doc, code, fragment):
    path = tmp_path / "tool.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    assert_one_line_error(cli("sample", "--checkpoint", tiny_run, "--schema-file", path), code, fragment)


# the last resort


def test_an_unexpected_exception_is_one_line_and_a_saved_traceback(tiny_run, monkeypatch, crash_dir):
    import cdt.sampling.run as run

    def broken(*a, **k):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(run, "final_critic_probs", broken)
    result = cli("sample", "--checkpoint", tiny_run)
    assert_one_line_error(result, 1, "internal error RuntimeError: a bug (a bug in cdt; the traceback is in")
    saved = Path(result.stderr.split("the traceback is in ")[1].strip().rstrip(")"))
    assert saved.parent == crash_dir and "Traceback" in saved.read_text() and "final_critic_probs" in saved.read_text()


def test_an_os_error_is_one_line_naming_the_file(tiny_run, monkeypatch):
    import cdt.sampling.run as run

    def refused(*a, **k):
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(run, "final_critic_probs", refused)
    assert_one_line_error(cli("sample", "--checkpoint", tiny_run), 1, "/some/file: Permission denied")


# nothing lost


def test_an_explicit_output_that_exists_is_refused_unless_overwrite(tiny_run, tmp_path):
    run = run_copy(tiny_run, tmp_path)
    out = tmp_path / "scores.jsonl"
    out.write_text("earlier\n")
    assert_one_line_error(cli("calibrate", "--checkpoint", run, "--n-samples", 2, "--out", out), 2,
                          "exists; give a new path, or add --overwrite")
    assert out.read_text() == "earlier\n"
    result = cli("calibrate", "--checkpoint", run, "--n-samples", 2, "--out", out, "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2 and json.loads(result.stdout)["replaced"] == [str(out)]
    assert "--out PATH writes the scores elsewhere" not in result.stderr  # --out was given: no such advice


def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(tiny_run, tmp_path):
    run = run_copy(tiny_run, tmp_path)
    out = tmp_path / "scores.jsonl"
    with OutputLock(out, "--out"):
        assert_one_line_error(cli("calibrate", "--checkpoint", run, "--n-samples", 2, "--out", out), 1,
                              f"is being written by another cdt run (process {os.getpid()})", "another --out")
        assert_one_line_error(cli("eval", "--checkpoint", run, "--n", 2, "--rows", out), 1,
                              f"(process {os.getpid()})")
    with OutputLock(run / "calibration_report.json", None):  # the run's report and map: one writer at a time
        assert_one_line_error(cli("calibrate", "--checkpoint", run, "--n-samples", 2), 1,
                              "calibration_report.json is being written by another cdt run")
    with OutputLock(tmp_path / "train", "--out"):
        assert_one_line_error(cli("train", "--preset", "tiny", "--out", tmp_path / "train"), 1,
                              "is being written by another cdt run")
    assert not out.exists() and not (tmp_path / "train").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")] == []  # released locks are removed


def test_the_lock_holds_across_real_processes(tiny_run, tmp_path):
    """Two processes: a holder keeps the scores file's lock; `cdt calibrate` in another is refused at once."""
    out = tmp_path / "scores.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from cdt.rundir import OutputLock
        with OutputLock({str(out)!r}, "--out"):
            print("held", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = cdt_process("calibrate", "--checkpoint", tiny_run, "--n-samples", 2, "--out", out)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: {out} is being written by another cdt run (process {holder.pid}); wait for it to finish or "
            "choose another --out"]
    finally:
        holder.communicate("\n", timeout=30)
    assert not out.exists()


def test_a_non_finite_loss_saves_nothing_and_its_advice_works_as_printed(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--preset", "tiny", "--out", out, "--set", "train.lr=1e9", "--json")
    assert_one_line_error(result, 1, "loss became nan", "nothing was saved", "adding --set train.lr=1e+08")
    assert not (out / "checkpoint.pt").exists()
    advice = result.stderr.split("adding ")[1].strip()
    again = cli("train", "--preset", "tiny", "--out", out, "--set", "train.lr=1e9", *shlex.split(advice))
    assert "already holds a run" not in again.stderr and "--set" in advice


def test_a_loss_that_diverges_after_a_checkpoint_keeps_it_and_names_the_command_to_continue(tmp_path, monkeypatch):
    import cdt.train as train_module

    real = train_module.critic_alpha
    monkeypatch.setattr(train_module, "critic_alpha", lambda step, tc: float("inf") if step >= 12 else real(step, tc))
    out = tmp_path / "run"
    result = cli("train", "--preset", "tiny", "--out", out, "--json")
    assert_one_line_error(result, 1, "loss became inf at step 13", "keeps the checkpoint of step 10")
    assert checkpoint.load(out).step == 10  # the diverged state was not saved over it
    command = result.stderr.split("lower rates: ")[1].strip()
    monkeypatch.setattr(train_module, "critic_alpha", real)
    resumed = cli(*shlex.split(command)[1:])
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.load(out).step == 30 and evals(out)[-1]["step"] == 30


def test_a_run_too_short_for_the_critic_warm_up_still_trains_the_critic(tmp_path, capsys):
    cfg = resolve("small", overrides=[{"train": {"max_iters": 30}}])
    assert "its warm-up moves to steps 18-21" in capsys.readouterr().err
    assert (cfg.train.critic_warmup_start, cfg.train.critic_warmup_end) == (18, 21)
    assert resolve("small").train.critic_warmup_start == 1750 and capsys.readouterr().err == ""  # as the preset says
    out = tmp_path / "run"
    result = cli("train", "--preset", "tiny", "--out", out, "--set", "train.critic_alpha_start=0",
                 "--set", "train.critic_warmup_start=40", "--set", "train.critic_warmup_end=50", "--json")
    assert result.exit_code == 0 and "the critic would never train" in result.stderr
    logged = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["alpha"] for r in logged if r["kind"] == "train") > 0


@pytest.mark.slow  # 5-7 s; the README's test command stays near 3 minutes
def test_the_commands_train_suggests_run_as_printed(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--preset", "tiny", "--out", out, "--json")
    commands = [c.split("   #")[0] for c in json.loads(result.stdout)["next_commands"]]
    assert any("--n-samples 189" in c for c in commands)  # the split holds 189 rows, not 200
    for command in commands:
        args = shlex.split(command)
        args += ["--steps", "2"] if args[1] in ("eval", "calibrate", "sample") else []
        args += ["--steps", "2", "--policies", "confidence"] if args[1] == "eval" else []
        ran = cli(*args[1:])
        assert ran.exit_code == 0, (command, ran.output)


# headless progress


def test_progress_off_a_terminal_is_plain_lines(tiny_run, tmp_path, monkeypatch):
    import cdt.progress as progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    result = cli("calibrate", "--checkpoint", run_copy(tiny_run, tmp_path), "--n-samples", 4, "--batch-size", 2)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("calibrate ")]
    assert [ln.split(" · ")[0] for ln in lines] == ["calibrate 2/4 (50%)", "calibrate 4/4 (100%)"]
    assert "elapsed" in lines[0] and "\x1b" not in result.stderr


@pytest.mark.slow  # a training process of its own; test_progress_off_a_terminal_is_plain_lines checks in-process
def test_train_through_a_pipe_shows_its_progress_without_ansi_codes(tmp_path):
    proc = cdt_process("train", "--preset", "tiny", "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr
    assert re.search(r"^run .* 0\.02M parameters", proc.stderr, re.M)
    assert [ln.split(":")[0] for ln in proc.stderr.splitlines() if ln.startswith("step ")] == \
        ["step 10", "step 20", "step 30"]
    assert re.search(r"^train 30/30 \(100%\) · loss", proc.stderr, re.M)
