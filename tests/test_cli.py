"""The real command line, through CliRunner and once as a subprocess."""

import json

import pytest

from tests.helpers import NotWeights, assert_one_line_error, cdt_process, cli, same_state


def test_train_json_prints_one_document(tmp_path):
    result = cli("train", "--preset", "tiny", "--max-iters", "12", "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["step"] == 12 and doc["checkpoint"].endswith("checkpoint.pt") and doc["config"]["train"]["max_iters"] == 12
    assert doc["data"]["overlap"] == 0 and "val_bpc" in doc["final_eval"]
    assert (tmp_path / "r" / "config.yaml").read_text().count("max_iters: 12") == 1


def test_train_human_summary_names_checkpoint_and_next_steps(tmp_path):
    result = cli("train", "--preset", "tiny", "--max-iters", "6", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.stderr
    assert "checkpoint.pt" in result.stdout and "--resume" in result.stdout
    assert "moving average, decay 0.99" in result.stdout  # which weights the figures describe
    raw = cli("train", "--preset", "tiny", "--max-iters", "6", "--out", str(tmp_path / "raw"), "--set", "train.ema=0")
    assert raw.exit_code == 0 and "moving average" not in raw.stdout


def test_train_summary_names_what_was_graded(tmp_path):
    """toolcalls grades the answers; plain text has none, so the summary says every masked character."""
    answers = cli("train", "--preset", "tiny", "--max-iters", "6", "--out", str(tmp_path / "a"))
    assert answers.exit_code == 0, answers.stderr
    assert "answer-character accuracy" in answers.stdout and "AUROC" in answers.stdout
    assert "on answer positions" in answers.stdout
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    plain = cli("train", "--preset", "tiny", "--max-iters", "6", "--data", str(text), "--out", str(tmp_path / "p"))
    assert plain.exit_code == 0, plain.stderr
    assert "masked-character accuracy" in plain.stdout and "on every position" in plain.stdout
    assert "answer" not in plain.stdout.split("next:")[0]
    doc = json.loads(cli("train", "--preset", "tiny", "--max-iters", "6", "--data", str(text), "--out",
                         str(tmp_path / "j"), "--json").stdout)
    assert doc["mask_region"] == "all"


def test_set_and_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  max_iters: 4\n")
    result = cli("train", "--preset", "tiny", "--config", str(f), "--set", "model.critic=mlp",
                 "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["step"] == 4 and doc["config"]["model"]["critic"] == "mlp"


@pytest.mark.parametrize("args, code, fragment", [
    (["--preset", "medium"], 2, "unknown preset 'medium'"),
    (["--set", "train.nope=1"], 2, "unknown config key train.nope"),
    (["--set", "oops"], 2, "SECTION.KEY=VALUE"),
    (["--data", "/no/such/file.txt"], 1, "data file not found: /no/such/file.txt"),
    (["--resume"], 2, "--resume needs --out"),
])
def test_bad_input_gives_one_line_and_exit_code(args, code, fragment, tmp_path):
    assert_one_line_error(cli("train", "--preset", "tiny", *args), code, fragment)


def test_non_utf8_data(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1") * 5)
    assert_one_line_error(cli("train", "--preset", "tiny", "--data", str(f), "--out", str(tmp_path / "r")), 1,
                          "not valid UTF-8", str(f))


def test_resume_keeps_the_runs_own_settings(tmp_path):
    """`--out RUN --resume` alone continues with the preset and --set values RUN was trained with
    (the command `cdt train` prints as its last hint). Before, it fell back to the defaults and
    refused the run's architecture, or, for a setting outside the architecture, trained on with
    another value without a word."""

    flags = ["--preset", "tiny", "--set", "model.copy=true", "--set", "train.lr=0.005", "--eval-interval", "100"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("train", *flags, "--max-iters", "8", "--out", str(full), "--json").exit_code == 0
    assert cli("train", *flags, "--max-iters", "5", "--out", str(part), "--json").exit_code == 0
    resumed = cli("train", "--out", str(part), "--resume", "--max-iters", "8", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["step"] == 8 and doc["config"]["model"]["copy"] and doc["config"]["train"]["lr"] == 0.005
    same_state(full, part)


def test_flags_given_with_resume_change_the_runs_settings(tmp_path, tiny_run):
    import shutil

    run_dir = tmp_path / "r"
    shutil.copytree(tiny_run, run_dir)
    result = cli("train", "--out", str(run_dir), "--resume", "--max-iters", "32", "--set", "train.lr=0.0007", "--json")
    assert result.exit_code == 0, result.stderr
    assert "lr: 0.0007" in (run_dir / "config.yaml").read_text()
    assert json.loads(result.stdout)["config"]["model"]["n_layers"] == 2  # the tiny run's own, not the default 4


def test_resume_with_broken_checkpoints(tmp_path, tiny_run):
    good = (tiny_run / "checkpoint.pt").read_bytes()
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(good[: len(good) // 3])
    assert_one_line_error(cli("train", "--preset", "tiny", "--out", str(run_dir), "--resume"), 1, "truncated or corrupt")
    import torch
    torch.save({"format": "cdt-checkpoint", "x": NotWeights()}, run_dir / "checkpoint.pt")
    assert_one_line_error(cli("train", "--preset", "tiny", "--out", str(run_dir), "--resume"), 1, "pickled Python objects")
    assert_one_line_error(cli("train", "--preset", "tiny", "--out", str(tiny_run)), 1, "already holds a run")


def test_help_explains():
    result = cli("train", "--help")
    assert result.exit_code == 0
    for flag in ("--preset", "--config", "--data", "--out", "--max-iters", "--resume", "--json", "--set"):
        assert flag in result.stdout


def test_version_is_the_installed_packages():
    from importlib.metadata import version

    import cdt
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"cdt {cdt.__version__}\n"
    assert version("cdt") == cdt.__version__  # pyproject reads it from cdt/__init__.py
    assert "--version" in cli("--help").stdout


def test_help_never_shows_a_flag_as_taking_a_value():
    """A flag takes no value: its help row must not read "--json <bool>" (typer 0.27+ prints that, so
    pyproject keeps typer below 0.27), and an argument reads as its name in capitals."""
    for command in ("train", "sample", "eval", "calibrate", "sweep-tau", "explore", "bench"):
        shown = cli(command, "--help").stdout
        assert "--json" in shown and "--help" in shown, command
        assert "<bool>" not in shown and "BOOLEAN" not in shown, command
    assert "sweep-tau [OPTIONS] SCORES" in cli("sweep-tau", "--help").stdout
    assert "bench [OPTIONS] BENCHMARK" in cli("bench", "--help").stdout


def test_python_dash_m_as_a_subprocess(tmp_path):
    proc = cdt_process("train", "--preset", "tiny", "--max-iters", 5, "--out", tmp_path / "r", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["step"] == 5
    assert proc.stderr == ""  # quiet in a pipe: no progress bar, no warnings


def test_a_plain_pickle_is_refused_in_one_line_by_the_real_process(tmp_path):
    """Python's own pickle (protocol 4+) makes torch warn before our refusal; the user sees one line."""
    import pickle

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(NotWeights(), protocol=4))
    proc = cdt_process("sample", "--checkpoint", path, "--prompt", "hi")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: refusing to load {path}: it holds pickled Python objects, "
                                                "not plain weights"]


def test_an_out_of_range_setting_stops_train_before_anything_is_written(tmp_path):
    result = cli("train", "--preset", "tiny", "--set", "train.batch_size=0", "--out", str(tmp_path / "r"))
    assert_one_line_error(result, 2, "train.batch_size must be at least 1, got 0")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, fragment", [
    (["explore", "--mode", "step", "--prompt", "hi"], "--mode step needs a held-out row"),
    (["explore", "--interactive", "--no-interactive"], "at most one of --interactive"),
    (["sample", "--prompt", "hi", "--prompts-file", "-"], "--prompt or --prompts-file, not both"),
    (["sample", "--schema", "get_weather", "--schema-file", "s.json"], "exactly one of --schema"),
    (["sample", "--blocks", "5", "--steps", "4"], "--blocks must be between 1 and --steps (4)"),
    (["sample", "--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["eval", "--rows", "r.jsonl", "--scaffold"], "--rows is not available with --scaffold"),
    (["eval", "--scaffold", "--mask", "span"], "cannot be combined with --mask random/span"),
    (["eval", "--steps", "8,x"], "--steps expects a comma-separated list"),
    (["calibrate", "--binning", "log"], "unknown binning 'log'"),
    (["calibrate", "--policy", "oracle"], "unknown policy 'oracle'"),
    (["calibrate", "--threshold", "1.5"], "--threshold must be between 0 and 1"),
])
def test_a_bad_flag_is_refused_before_the_checkpoint_is_even_read(args, fragment):
    """The checkpoint does not exist: a usage error that needed it would say so instead."""
    assert_one_line_error(cli(*args, "--checkpoint", "no/such/run"), 2, fragment)


def test_every_sampling_command_takes_the_same_sampler_flags():
    """One SampleConfig: its fields are flags of sample, eval (but the lists it compares), calibrate and explore."""
    from dataclasses import fields

    import typer

    from cdt.cli import app
    from cdt.settings import SampleConfig

    commands = typer.main.get_command(app).commands
    sampler = {"--" + f.name.replace("_", "-") for f in fields(SampleConfig)}
    for name in ("sample", "calibrate", "explore", "eval"):
        flags = {o for p in commands[name].params for o in p.opts}
        assert sampler - {"--policy", "--steps"} <= flags, name
        assert ({"--policy"} <= flags) == (name != "eval"), name  # eval: --policies, and --steps as a list


def test_eval_refuses_a_rows_file_that_exists_before_reading_the_checkpoint(tmp_path):
    (tmp_path / "rows.jsonl").write_text("earlier\n")
    assert_one_line_error(cli("eval", "--checkpoint", "no/such/run", "--rows", tmp_path / "rows.jsonl"), 2,
                          "exists; give a new path, or add --overwrite")
    assert (tmp_path / "rows.jsonl").read_text() == "earlier\n"
