import dataclasses
from pathlib import Path

import pytest
import yaml

from cdt.config import PRESETS, RunConfig, parse_override, preset_text, resolve, to_yaml
from cdt.errors import UsageError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_small_preset_is_the_default():
    assert resolve("small") == RunConfig() == resolve()


@pytest.mark.parametrize("name", PRESETS)
def test_every_shipped_preset_matches_the_dataclasses(name):
    data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg = resolve(name)
    for section, values in data.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value
    assert preset_text(name) == (CONFIGS / f"{name}.yaml").read_text()  # the installed copy is this file


def test_precedence_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  d_model: 48\ntrain:\n  lr: 0.01\n  batch_size: 3\n")
    cfg = resolve("tiny", f, [{"train": {"batch_size": 5}}])
    assert cfg.model.n_layers == 2  # preset over defaults
    assert cfg.model.d_model == 48 and cfg.train.lr == 0.01  # file over preset
    assert cfg.train.batch_size == 5  # flags over file
    assert cfg.train.schedule == "loglinear"  # untouched default


@pytest.mark.parametrize("text, match", [
    ("train:\n  lr_max: 1\n", "unknown config key train.lr_max"),
    ("optim:\n  lr: 1\n", "unknown config section 'optim'"),
    ("train:\n  batch_size: many\n", "train.batch_size must be int"),
    ("train:\n  batch_size: true\n", "train.batch_size must be int"),
    ("model:\n  critic: huge\n", "model.critic must be one of none, linear, mlp"),
    ("- a\n- b\n", "must be a mapping"),
    ("train: [unclosed\n", "not valid YAML"),
])
def test_bad_config_files(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UsageError, match=match):
        resolve(None, f)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="choose from tiny, small, base"):
        resolve("medium")
    with pytest.raises(UsageError, match="not found"):
        resolve(None, tmp_path / "nope.yaml")


def test_set_overrides_parse_yaml_values():
    assert resolve(overrides=[parse_override("train.lr=3e-4")]).train.lr == 3e-4
    assert parse_override("model.critic=mlp") == {"model": {"critic": "mlp"}}
    assert resolve(overrides=[parse_override("train.antithetic=false")]).train.antithetic is False
    with pytest.raises(UsageError, match="SECTION.KEY=VALUE"):
        parse_override("lr=1")


def test_resolved_config_round_trips_through_yaml():
    cfg = resolve("tiny", overrides=[{"model": {"critic": "mlp"}}])
    again = RunConfig()
    from cdt.config import apply
    apply(again, yaml.safe_load(to_yaml(cfg)), "round trip")
    assert again == cfg and dataclasses.asdict(again) == cfg.to_dict()
