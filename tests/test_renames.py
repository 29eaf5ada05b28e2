"""Names that changed in 0.1.0 keep working: old flags and config keys with one line of warning, old
checkpoints and calibration maps silently."""

import json

import pytest
import torch

from cdt import checkpoint
from cdt.config import RunConfig, resolve

from tests.helpers import cli


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


def test_old_config_names_load_with_a_warning(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  schedule: cosine\ncritic_stage:\n  loss: pointwise\n")
    cfg = resolve(None, old)
    assert cfg.train.noise_schedule == "cosine" and cfg.value_stage.loss == "pointwise"
    said = warnings_in(capsys.readouterr().err)
    assert len(said) == 2 and "train.schedule" in said[0] and "use train.noise_schedule" in said[0]
    assert "critic_stage" in said[1] and "use value_stage" in said[1]
    resolve(None, None, [{"train": {"schedule": "linear"}}])  # --set train.schedule=linear
    assert "train.schedule (in command line) is deprecated" in capsys.readouterr().err


def test_the_old_preset_name_is_the_new_preset(capsys):
    assert resolve("critic_pairwise") == resolve("value_pairwise")
    assert len(warnings_in(capsys.readouterr().err)) == 1


def test_a_checkpoints_old_names_load_silently(capsys):
    saved = RunConfig().to_dict()
    saved["train"]["schedule"] = saved["train"].pop("noise_schedule")
    saved["critic_stage"] = saved.pop("value_stage") | {"lr": 0.5}
    cfg = RunConfig.from_dict(saved)
    assert cfg.train.noise_schedule == "loglinear" and cfg.value_stage.lr == 0.5
    assert capsys.readouterr().err == ""  # a user cannot rename what an old checkpoint holds


def test_a_checkpoint_written_before_the_renames_samples_as_before(tiny_run, tmp_path):
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    state["config"]["train"]["schedule"] = state["config"]["train"].pop("noise_schedule")
    state["config"]["critic_stage"] = state["config"].pop("value_stage")
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / "checkpoint.pt")
    args = ("--prompt", "Set an alarm for 7 am", "--length", 20, "--steps", 3, "--json")
    old, new = cli("sample", "--checkpoint", tmp_path / "old", *args), cli("sample", "--checkpoint", tiny_run, *args)
    assert old.exit_code == 0 and old.stderr == "", old.stderr
    assert json.loads(old.stdout)["samples"] == json.loads(new.stdout)["samples"]
    assert checkpoint.load(tmp_path / "old").config == checkpoint.load(tiny_run).config


def test_explores_old_flags_still_work(tiny_run):
    new = cli("explore", "--checkpoint", tiny_run, "--steps", 2, "--mask", "span", "--n", 2, "--index", 1, "--json")
    old = cli("explore", "--checkpoint", tiny_run, "--steps", 2, "--masking", "span", "--rows", 2, "--index", 1,
              "--json")
    assert new.exit_code == old.exit_code == 0, old.stderr
    assert json.loads(old.stdout) == json.loads(new.stdout)
    said = warnings_in(old.stderr)
    assert len(said) == 2 and "--rows is deprecated" in said[0] and "use --n" in said[0] and "--masking" in said[1]
    both = cli("explore", "--checkpoint", tiny_run, "--mask", "span", "--masking", "random")
    assert both.exit_code == 2 and "not both" in both.stderr


@pytest.mark.parametrize("stage", ["critic", "value"])
def test_the_value_stage_answers_to_its_old_name(tiny_run, tmp_path, stage):
    """`--stage critic` was the sequence-level head's name; `critic` now means the token critic only."""
    result = cli("train", "--stage", stage, "--init", tiny_run)  # no --samples: refused either way
    assert result.exit_code == 2 and "--stage value needs --samples" in result.stderr
    assert ("--stage critic is deprecated" in result.stderr) == (stage == "critic")
