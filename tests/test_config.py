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


def test_copy_long_is_the_readme_command_line():
    # docs/measurements.md: the default architecture with AdamW, --max-iters 10200 --set train.critic_warmup_start=5700 ...
    flags = ["train.optimizer=adamw", "train.max_iters=10200", "train.critic_warmup_start=5700",
             "train.critic_warmup_end=6300"]
    assert resolve("copy_long") == resolve(None, None, [parse_override(f) for f in flags])


def test_long_is_the_default_three_times_as_long():
    # README, "Longer runs": the default's settings, --max-iters 9000, the critic's warm-up later
    flags = ["train.max_iters=9000", "train.critic_warmup_start=5700", "train.critic_warmup_end=6300"]
    assert resolve("long") == resolve(None, None, [parse_override(f) for f in flags])
    assert resolve("long").train.optimizer == "muon" and resolve("long").model.copy


def test_precedence_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  d_model: 48\ntrain:\n  lr: 0.01\n  batch_size: 3\n")
    cfg = resolve("tiny", f, [{"train": {"batch_size": 5}}])
    assert cfg.model.n_layers == 2  # preset over defaults
    assert cfg.model.d_model == 48 and cfg.train.lr == 0.01  # file over preset
    assert cfg.train.batch_size == 5  # flags over file
    assert cfg.train.noise_schedule == "loglinear"  # untouched default


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


@pytest.mark.parametrize("override, match", [
    ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
    ("train.max_iters=-5", "train.max_iters must be at least 1, got -5"),
    ("train.lr=-1", "train.lr must be above 0, got -1.0"),
    ("train.lr=0", "train.lr must be above 0"),
    ("train.beta2=1", r"train.beta2 must be in \[0, 1\), got 1.0"),
    ("model.d_model=0", "model.d_model must be at least 1"),
    ("model.dropout=1.5", "model.dropout must be in"),
    ("data.answer_tail=-3", "data.answer_tail must be at least 0"),
    ("sample.steps=0", "sample.steps must be at least 1"),
    ("value_stage.val_share=1", r"value_stage.val_share must be in \(0, 1\)"),
    ("model.d_model=30", r"model.d_model \(30\) must split into model.n_heads \(2\) heads of even width"),
    ("model.n_heads=3", "heads of even width"),  # 3 do not divide 32
])
def test_out_of_range_values_are_usage_errors(override, match):
    with pytest.raises(UsageError, match=match):
        resolve("tiny", None, [parse_override(override)])


def test_rules_between_keys_see_every_source(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  critic_warmup_start: 50\n")
    with pytest.raises(UsageError, match=r"critic_warmup_end \(10\) is before train.critic_warmup_start \(50\)"):
        resolve("tiny", f)
    # a flag that repairs what the file broke is taken into account
    assert resolve("tiny", f, [parse_override("train.critic_warmup_end=60")]).train.critic_warmup_end == 60
    assert resolve("tiny", None, [parse_override("model.d_model=36")]).model.d_model == 36  # 2 heads of 18: fine


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="choose from tiny, small, long, functions, base"):
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


def test_a_scaffold_run_gets_room_for_its_rows_unless_the_command_line_sets_the_block_size():
    from cdt.config import SCAFFOLD_BLOCK_SIZE
    from cdt.data import load_corpus

    longest = load_corpus("toolcalls", 10_000, 5_000, 0, scaffold=True).info["longest_row"]
    assert longest <= SCAFFOLD_BLOCK_SIZE < longest + 64  # room, not a guess
    assert resolve("tiny", overrides=[{"data": {"scaffold": True}}]).model.block_size == SCAFFOLD_BLOCK_SIZE
    assert resolve("tiny").model.block_size < SCAFFOLD_BLOCK_SIZE
    explicit = resolve("tiny", overrides=[{"data": {"scaffold": True}}, {"model": {"block_size": 300}}])
    assert explicit.model.block_size == 300


def test_functions_is_the_functions_corpus_scaffolded_and_the_flags_alone_suffice():
    flags = [parse_override("data.source=functions"), parse_override("data.scaffold=true")]
    assert resolve("functions") == resolve(None, None, flags)
    assert resolve("functions").model.block_size == 720  # the corpus's rows and BFCL's requests fit
    assert resolve(None, None, flags[:1]).model.block_size == 720  # --data functions alone too
    assert resolve(None, None, [*flags, parse_override("model.block_size=300")]).model.block_size == 300
