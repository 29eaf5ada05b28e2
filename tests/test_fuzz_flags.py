"""Random flag values through every subcommand: whatever a user types, the answer is one `error:` line and
exit 1 or 2 before any work, never a traceback or an internal error. Each command's flags are read from its
settings dataclass, so a flag added later is fuzzed too."""

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdt import settings as cdt_settings
from cdt.settings import (BenchSettings, CalibrateSettings, EvalSettings, ExploreSettings, SampleConfig, SweepSettings,
                          TrainSettings, leaf_fields)
from tests.helpers import cli

WORDS = sorted({*cdt_settings.POLICY_NAMES, *cdt_settings.MASKS, *cdt_settings.BINNINGS, *cdt_settings.FITS,
                *cdt_settings.DIRECTIONS, *cdt_settings.GRIDS, *cdt_settings.COLOURINGS, *cdt_settings.DEVICES,
                *cdt_settings.COMMITS, *cdt_settings.SELECTIONS, *cdt_settings.BFCL_CATEGORIES, "generate", "step",
                "value", "generator", "linear", "cosine", "power:3", "power:x", "critic", "value-head", "cuda:0",
                "tiny", "small", "toolcalls", "functions"})
INTS = st.one_of(st.integers(-3, 300), st.sampled_from([-(2**63), -1, 0, 2**32, 2**64, 10**12]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, -1e-9, 1e308]))
# any text but NUL, which no shell can pass in an argument
TEXT = st.one_of(st.sampled_from(WORDS), st.text(st.characters(blacklist_characters="\x00"), max_size=12))


def value_of(kind):
    """What a user might type for a flag of this type (a flag's text, or True for a switch)."""
    if kind is bool:
        return st.just(True)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return st.lists(value_of(item), max_size=4).map(lambda xs: ",".join(map(str, xs)))
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    kind = args[0] if args else kind
    return {int: INTS, float: FLOATS}.get(kind, TEXT).map(lambda v: v if v is True else str(v))


def flags_of(cls, skip=()):
    """{flag: strategy} for every flag of settings class `cls`."""
    out = {}
    for f, kind, _, _ in leaf_fields(cls()):
        if "help" in f.metadata and f.name not in skip:
            out[f.metadata["name"] or "--" + f.name.replace("_", "-")] = value_of(kind)
    return out


def command_line(fixed, flags):
    """`fixed` plus a random subset of `flags` with random values."""
    return st.lists(st.sampled_from(sorted(flags)), max_size=5, unique=True).flatmap(
        lambda names: st.tuples(*[flags[n] for n in names]).map(
            lambda values: fixed + [a for n, v in zip(names, values) for a in ([n] if v is True else [n, v])]))


NO_RUN = ["--checkpoint", "no/such/run"]  # a flag set that passes validation fails on the checkpoint, before work
COMMANDS = {
    "sample": (["sample", *NO_RUN], flags_of(SampleConfig)),
    "eval": (["eval", *NO_RUN], flags_of(EvalSettings)),
    "calibrate": (["calibrate", *NO_RUN], flags_of(CalibrateSettings)),
    "explore": (["explore", *NO_RUN, "--no-interactive"], flags_of(ExploreSettings)),
    "sweep-tau": (["sweep-tau", "no/such/scores.jsonl"], flags_of(SweepSettings)),
    "bench": (["bench", "bfcl", *NO_RUN, "--data", "no/such/dir"], flags_of(BenchSettings, skip=("data",))),
    # --out under a file: a flag set that passes validation is refused before training starts
    "train": (["train", "--out", "/dev/null/run"], flags_of(TrainSettings, skip=("out",))),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_random_flags_get_one_line_and_a_usage_or_runtime_code(command):
    fixed, flags = COMMANDS[command]

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(command_line(fixed, flags))
    def check(args):
        result = cli(*args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert result.stdout == "", args
        errors = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
        assert len(errors) == 1 and errors[0].startswith("error: "), (args, result.stderr)
        assert "internal error" not in errors[0] and "Traceback" not in result.stderr, (args, result.stderr)

    check()
