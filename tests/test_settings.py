"""Command settings: one dataclass per command, its fields the flags, nested sampler settings included."""

import dataclasses

import pytest

from cdt.errors import UsageError
from cdt.settings import (CalibrateSettings, EvalSettings, ExploreSettings, SampleConfig, SweepSettings,
                          TrainSettings, flag_dict, from_flags)

ALL = (SampleConfig, EvalSettings, CalibrateSettings, SweepSettings, ExploreSettings, TrainSettings)


@pytest.mark.parametrize("cls", ALL)
def test_flat_flags_rebuild_the_settings_they_came_from(cls):
    obj = cls()
    assert from_flags(cls, **flag_dict(obj)) == obj
    obj.validate()  # the defaults are valid


def test_a_nested_sampler_takes_its_own_flags():
    cal = from_flags(CalibrateSettings, n_samples=5, steps=3, temperature=0.0)
    assert cal.n_samples == 5 and cal.sampler == SampleConfig(steps=3, temperature=0.0, policy="critic")
    assert cal.to_dict()["steps"] == 3 and "sampler" not in cal.to_dict()
    ev = from_flags(EvalSettings, steps="4, 8", policies="critic", spread=True)
    assert ev.steps == (4, 8) and ev.policies == ("critic",) and ev.sampler.spread and ev.sampler.steps is None
    assert [(c.policy, c.steps) for c in ev.settings()] == [("critic", 4), ("critic", 8)]
    with pytest.raises(TypeError, match="no flag colour"):
        from_flags(EvalSettings, colour="red")


def test_every_flag_has_help_and_a_name_no_two_fields_share():
    for cls in ALL:
        names = list(flag_dict(cls()))
        assert len(names) == len(set(names)), cls.__name__
        for f in dataclasses.fields(cls):
            assert "panel" in f.metadata or "help" in f.metadata or f.name == "remask_pct", (cls.__name__, f.name)


def test_the_checkpoint_fills_in_what_the_flags_left_to_it():
    class Ckpt:  # just what for_checkpoint reads
        class config:
            class sample:
                steps = 12

    assert SampleConfig().for_checkpoint(Ckpt).steps == 12
    assert SampleConfig(steps=5).for_checkpoint(Ckpt).steps == 5
    with pytest.raises(UsageError, match="--blocks must be between 1 and --steps \\(12\\)"):
        SampleConfig(blocks=13).for_checkpoint(Ckpt)
