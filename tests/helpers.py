"""What the test modules share: the real command line in-process, its one-line error contract, tiny configs."""

import json
import os
import subprocess
import sys
import time

import torch

from typer.testing import CliRunner

from cdt import checkpoint
from cdt.cli import app
from cdt.config import resolve

runner = CliRunner()


def cli(*args, **kw):
    """`cdt ARGS` through CliRunner (paths and numbers may be given as they are); stdout and stderr apart."""
    return runner.invoke(app, [str(a) for a in args], **kw)


def cdt_process(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`python -m cdt ARGS` as a real process, in this test run's interpreter, with 2 torch threads."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "cdt", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def assert_one_line_error(result, code, *fragments):
    """Exit `code`, nothing on stdout, one line on stderr holding every fragment, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for f in fragments:
        assert f in lines[0]


def tiny_config(**train):
    """The tiny preset on the CPU, with optional train.* overrides.

    The suite pins the CPU (fp32) where `auto` would take a GPU: its exact comparisons (resume, batch
    independence, re-validation) hold in fp32, not under CUDA's bf16 autocast. The CUDA test asks for it."""
    return resolve("tiny", overrides=[{"train": {"device": "cpu", **train}}])


def evals(run_dir):
    """The evaluation records of a run's metrics log."""
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "eval"]


def same_state(a, b):
    """Two checkpoints hold the same step, weights (raw and averaged) and optimizer state, bit for bit."""
    sa, sb = checkpoint.load(a), checkpoint.load(b)
    assert sa.step == sb.step
    assert sa.model_state.keys() == sb.model_state.keys()
    assert all(torch.equal(sa.model_state[k], sb.model_state[k]) for k in sa.model_state)
    assert (sa.train_model_state is None) == (sb.train_model_state is None)  # the raw weights under the average
    if sa.train_model_state is not None:
        assert all(torch.equal(sa.train_model_state[k], sb.train_model_state[k]) for k in sa.train_model_state)
    parts = ["adamw", "muon"] if "muon" in sa.optimizer_state else [None]
    for part in parts:  # muon: one state dict per optimiser
        oa, ob = ((s.optimizer_state[part] if part else s.optimizer_state)["state"] for s in (sa, sb))
        assert oa.keys() == ob.keys() and oa
        assert all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i])


class NotWeights:
    """A pickled object of this class must never be unpickled by the loader."""

    def __reduce__(self):
        return (print, ("this code would run on load",))


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def left_behind(path, pid: int, text: str, age: float):
    """What a run killed `age` seconds ago while writing `path` would have left: `<name>.<pid>.writing`."""
    f = path.with_name(f"{path.name}.{pid}.writing")
    f.write_text(text)
    return aged(f, age)


def aged(f, seconds: float):
    """f as a later run finds it: last touched `seconds` ago."""
    os.utime(f, (time.time() - seconds,) * 2)
    return f
