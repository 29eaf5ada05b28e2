"""`cdt sample` and `cdt eval` through the real command line."""

import json

import pytest

from tests.helpers import assert_one_line_error, cli


def test_sample_prints_one_line_per_row(tiny_run):
    result = cli("sample", "--checkpoint", str(tiny_run), "--prompt", "Set an alarm for 7 am", "--length", "20",
                 "--n", "3", "--steps", "4")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3  # a generated newline is escaped, never a line of its own
    raw = [line.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\") for line in lines]
    assert all(len(text) == 20 for text in raw)


def test_sample_json_and_determinism(tiny_run):
    args = ("sample", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--prompt", "Weather in Oslo today",
            "--length", "12", "--n", "2", "--steps", "4", "--policy", "critic", "--seed", "5", "--json")
    first, second = cli(*args), cli(*args)
    assert first.exit_code == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc == json.loads(second.stdout)
    assert doc["passes"] == {"generator": 4, "critic": 4} and doc["report_passes"] == 0
    assert "more likely wrong" in doc["critic_polarity"]
    for s in doc["samples"]:
        assert len(s["text"]) == 12 and len(s["critic_probs"]) == 12
        assert all(0.0 <= p <= 1.0 for p in s["critic_probs"])


def test_sample_confidence_policy_reports_critic_probs_with_one_extra_pass(tiny_run):
    result = cli("sample", "--checkpoint", str(tiny_run), "--prompt", "Hi", "--length", "8", "--steps", "4",
                 "--schedule", "linear", "--json")
    doc = json.loads(result.stdout)
    assert doc["passes"] == {"generator": 4, "critic": 0} and doc["report_passes"] == 1
    assert len(doc["samples"][0]["critic_probs"]) == 8


def test_sample_power_schedule_stops_once_the_region_is_full(tiny_run):
    """power:4 over 8 steps leaves 12 * (1 - s/8)^4 = 7.0, 3.8, 1.9, 0.8 masked: done after step 4."""
    result = cli("sample", "--checkpoint", str(tiny_run), "--prompt", "Hi", "--length", "12", "--steps", "8",
                 "--schedule", "power:4", "--json", "--show-steps")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passes"] == {"generator": 4, "critic": 0}
    steps = [ln for ln in result.stderr.splitlines() if ln.strip().startswith("step")]
    assert [s.count("_") for s in steps] == [7, 3, 1, 0]


def test_show_steps_plain_in_a_pipe(tiny_run):
    result = cli("sample", "--checkpoint", str(tiny_run), "--prompt", "Hi", "--length", "8", "--steps", "4",
                 "--schedule", "linear", "--show-steps")
    assert result.exit_code == 0
    steps = [ln for ln in result.stderr.splitlines() if ln.strip().startswith("step")]
    assert len(steps) == 4 and steps[0].count("_") == 6 and "_" not in steps[-1]


def test_prompts_file_gives_each_request_what_its_own_prompt_gives(tiny_run, tmp_path):
    """The oracle: one `--prompt` run per request. Blank lines are skipped; rows keep their seeds."""
    requests = ["Set an alarm for 7 am", "Weather in Oslo today"]
    f = tmp_path / "requests.txt"
    f.write_text(requests[0] + "\n\n" + requests[1] + "\n", encoding="utf-8")
    common = ("--checkpoint", str(tiny_run), "--length", "16", "--n", "2", "--steps", "4", "--policy", "critic",
              "--seed", "3")
    result = cli("sample", *common, "--prompts-file", str(f), "--json")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["prompt"], d["row"]) for d in docs] == [(p, r) for p in requests for r in (0, 1)]
    for p in requests:
        alone = json.loads(cli("sample", *common, "--prompt", p, "--json").stdout)["samples"]
        mine = [d for d in docs if d["prompt"] == p]
        assert [d["text"] for d in mine] == [s["text"] for s in alone]
        assert [d["critic_probs"] for d in mine] == [s["critic_probs"] for s in alone]
    plain = cli("sample", *common, "--prompts-file", str(f))
    assert [json.loads(line) for line in plain.stdout.splitlines()] == [
        {k: d[k] for k in ("prompt", "row", "text")} for d in docs]  # critic_probs only with --json
    piped = cli("sample", *common, "--prompts-file", "-", input=f.read_text(encoding="utf-8"))
    assert piped.stdout == plain.stdout


def test_prompts_file_checks_every_request_before_generating_any(tiny_run, tmp_path):
    f = tmp_path / "requests.txt"
    f.write_text("Set an alarm for 7 am\nnaïve ☃\n", encoding="utf-8")
    assert_one_line_error(cli("sample", "--checkpoint", str(tiny_run), "--prompts-file", str(f), "--length", "8"),
                          1, "request 2:", "'☃'")
    from cdt.checkpoint import load

    room = load(tiny_run).config.model.block_size - 10  # "Hi" and its separator fit beside it, 20 characters do not
    f.write_text("Hi\n" + "x" * 20 + "\n", encoding="utf-8")
    assert_one_line_error(cli("sample", "--checkpoint", str(tiny_run), "--prompts-file", str(f), "--length", str(room)),
                          1, "request 2:", "exceeds the model's block size")
    f.write_text("\n \n", encoding="utf-8")
    assert_one_line_error(cli("sample", "--checkpoint", str(tiny_run), "--prompts-file", str(f)), 1, "no requests in")
    assert_one_line_error(cli("sample", "--checkpoint", str(tiny_run), "--prompts-file", str(f), "--prompt", "Hi"),
                          2, "give --prompt or --prompts-file, not both")


@pytest.mark.parametrize("args, code, fragment", [
    (["--prompt", "naïve ☃"], 1, "'☃'"),
    (["--steps", "0"], 2, "--steps"),
    (["--n", "0"], 2, "--n"),
    (["--length", "5000"], 1, "exceeds the model's block size"),
    (["--policy", "oracle"], 2, "unknown policy 'oracle'"),
    (["--schedule", "power:0"], 2, "unknown schedule 'power:0'; choose from linear, cosine, power:P"),
])
def test_sample_bad_input(tiny_run, args, code, fragment):
    result = cli("sample", "--checkpoint", str(tiny_run), *args)
    if code == 2 and fragment.startswith("--"):  # rejected by the flag parser itself
        assert result.exit_code == 2 and "Traceback" not in result.output
    else:
        assert_one_line_error(result, code, fragment)


def test_sample_missing_checkpoint_and_critic_without_critic(tmp_path):
    assert_one_line_error(cli("sample", "--checkpoint", str(tmp_path / "nope")), 1, "no checkpoint at")
    from cdt.train import train
    from tests.helpers import tiny_config
    cfg = tiny_config(max_iters=2, eval_interval=2)
    cfg.model.critic = "none"
    train(cfg, tmp_path / "nocritic")
    assert_one_line_error(cli("sample", "--checkpoint", str(tmp_path / "nocritic"), "--policy", "critic"), 1,
                          "trained without one")
    ok = cli("sample", "--checkpoint", str(tmp_path / "nocritic"), "--length", "5", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["samples"][0]["critic_probs"] is None


def test_eval_table_and_json(tiny_run):
    result = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence,critic", "--steps", "2,4",
                 "--n", "6", "--batch-size", "4", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["policy"], r["steps"]) for r in rows] == [("confidence", 2), ("critic", 2), ("confidence", 4), ("critic", 4)]
    by = {(r["policy"], r["steps"]): r for r in rows}
    assert by[("critic", 2)]["passes"] == 4 and by[("confidence", 4)]["passes"] == 4  # equal cost
    for r in rows:
        assert 0 <= r["exact"] <= r["char_acc"] <= 1 or r["exact"] == 0
        assert 0 <= r["json_valid"] <= 1 and 0 <= r["field_acc"] <= 1
    table = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence", "--steps", "2", "--n", "3")
    assert table.exit_code == 0 and "passes" in table.stdout and "confidence" in table.stdout


def test_spread_flag_reaches_sample_and_eval(tiny_run):
    args = ("--checkpoint", str(tiny_run), "--steps", "4", "--json", "--spread")
    sample = cli("sample", *args, "--prompt", "Hi", "--length", "10")
    assert sample.exit_code == 0, sample.stderr
    assert json.loads(sample.stdout)["config"]["spread"] is True
    ev = cli("eval", *args, "--policies", "confidence", "--n", "3")
    assert ev.exit_code == 0, ev.stderr
    assert json.loads(ev.stdout)["spread"] is True


def test_blocks_flag_reaches_sample_and_eval_and_is_checked_against_the_steps(tiny_run):
    args = ("--checkpoint", str(tiny_run), "--steps", "4", "--json", "--blocks", "2")
    sample = cli("sample", *args, "--prompt", "Hi", "--length", "10")
    assert sample.exit_code == 0, sample.stderr
    assert json.loads(sample.stdout)["config"]["blocks"] == 2
    ev = cli("eval", *args, "--policies", "confidence", "--n", "3")
    assert ev.exit_code == 0, ev.stderr
    assert json.loads(ev.stdout)["blocks"] == 2
    table = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence", "--steps", "4", "--n", "3",
                "--blocks", "2")
    assert "in 2 left-to-right blocks" in table.stdout
    assert_one_line_error(cli("eval", "--checkpoint", str(tiny_run), "--steps", "8,2", "--blocks", "4"), 2,
                          "--blocks must be between 1 and --steps (2)")
    assert_one_line_error(cli("sample", "--checkpoint", str(tiny_run), "--steps", "2", "--blocks", "4"), 2,
                          "--blocks must be between 1 and --steps (2)")
    # without --steps, the checkpoint's own step count (16) is the bound
    assert_one_line_error(cli("sample", "--checkpoint", str(tiny_run), "--blocks", "17"), 2, "(16), got 17")


def test_eval_results_do_not_depend_on_batch_size(tiny_run):
    a = cli("eval", "--checkpoint", str(tiny_run), "--policies", "critic", "--steps", "3", "--n", "5",
            "--batch-size", "5", "--device", "cpu", "--json")
    b = cli("eval", "--checkpoint", str(tiny_run), "--policies", "critic", "--steps", "3", "--n", "5",
            "--batch-size", "2", "--device", "cpu", "--json")
    ra, rb = json.loads(a.stdout)["rows"][0], json.loads(b.stdout)["rows"][0]
    assert (ra["char_acc"], ra["exact"], ra["field_acc"]) == (rb["char_acc"], rb["exact"], rb["field_acc"])


@pytest.mark.parametrize("args, fragment", [(["--steps", "4,x"], "comma-separated"),
                                            (["--policies", "confidence,oracle"], "unknown policy"),
                                            (["--schedule", "square"], "unknown schedule 'square'")])
def test_eval_bad_input(tiny_run, args, fragment):
    assert_one_line_error(cli("eval", "--checkpoint", str(tiny_run), *args), 2, fragment)


def test_help_names_every_registered_policy():
    from cdt.sampling.policies import POLICIES
    from cdt.settings import POLICY_NAMES

    assert list(POLICY_NAMES) == list(POLICIES)
    for command, lead in (("sample", "Remasking policy:"), ("eval", "compare, from:"),
                          ("calibrate", "Remasking policy:"), ("explore", "Remasking policy:")):
        shown = cli(command, "--help", env={"COLUMNS": "160"}).stdout  # room for whole words
        text = " ".join(shown.replace("│", " ").split())  # rich wraps the help text
        listed = text.split(lead)[1].split(".")[0]
        assert [p.strip(" ,") for p in listed.split(",")] == list(POLICIES), command


def test_the_trajectory_keeps_one_line_per_step_when_a_row_holds_a_newline():
    """A generated newline or tab is shown as ⏎ / ⇥, so it cannot break a step's line in two."""
    from types import SimpleNamespace

    import torch

    from cdt.render import trajectory
    from cdt.vocab import Vocab

    vocab = Vocab.from_text("ab\n\t")
    row = torch.tensor([vocab.encode("a\nb\t")])
    steps = [SimpleNamespace(step=k, filled=row, remasked=torch.zeros_like(row, dtype=torch.bool)) for k in (1, 2)]
    result = SimpleNamespace(region=(0, 4), texts=["a\nb\t"], generation=SimpleNamespace(steps=steps))
    for plain in (True, False):
        lines = trajectory(result, vocab, plain).plain.splitlines()
        assert lines == ["row 0", "  step   1  a⏎b⇥", "  step   2  a⏎b⇥"]
