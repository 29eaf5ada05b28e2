"""torchrun DDP: 2 gloo processes on CPU against 1 process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from cdt import checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not sys.platform.startswith("linux"),
                                reason="needs torch.distributed (gloo)")

# gloo on the CPU wherever the suite runs: with --device auto on a machine with one GPU, the second rank
# would have none (test_a_rank_without_a_gpu_is_a_one_line_error)
COMMON = ["--preset", "tiny", "--max-iters", "8", "--eval-interval", "8", "--set", "train.log_interval=1", "--json",
          "--device", "cpu"]


def run(args, tmp_path, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def summary(proc) -> dict:
    """The --json document a finished run printed; on failure both streams go into the message
    (they showed rank 1 dying of SIGABRT at exit, "terminate called without an active exception",
    in about one run in ten until every rank met at a barrier before leaving its process group)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not one JSON document ({e})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "train"], lines


def train_one(tmp_path, name="one"):
    return run([sys.executable, "-m", "cdt", "train", *COMMON, "--batch-size", "8", "--out", str(tmp_path / name)],
               tmp_path)


def train_two(tmp_path, name="two"):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cdt",
                "train", *COMMON, "--batch-size", "4", "--out", str(tmp_path / name)], tmp_path)


@pytest.mark.slow  # 17 s of two real training processes: with the slow tests, which CI runs too
def test_two_processes_match_one_and_only_rank_0_writes(tmp_path):
    summary(train_one(tmp_path))
    doc = summary(train_two(tmp_path))  # rank 0 alone printed its summary
    assert doc["step"] == 8
    l1, _ = losses(tmp_path / "one")
    l2, lines = losses(tmp_path / "two")
    assert len(l1) == len(l2) == 8  # one line per step: only rank 0 logged
    # the same global batch of 8 rows; masks are drawn per rank, so losses agree within noise
    rel = [abs(a - b) / a for a, b in zip(l1, l2)]
    assert sum(rel) / len(rel) < 0.1, (l1, l2)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.jsonl"]
    assert sum(x["kind"] == "eval" for x in lines) == 1


@pytest.mark.slow
def test_a_run_resumes_in_another_number_of_processes(tmp_path):
    summary(train_two(tmp_path))
    resumed = run([sys.executable, "-m", "cdt", "train", "--out", str(tmp_path / "two"), "--resume", "--preset", "tiny",
                   "--max-iters", "10", "--batch-size", "8", "--device", "cpu", "--json"], tmp_path)
    assert summary(resumed)["step"] == 10
    # and the other way round: a 1-process run resumes in 2 processes
    summary(train_one(tmp_path))
    widened = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cdt",
                   "train", "--out", str(tmp_path / "one"), "--resume", "--preset", "tiny", "--max-iters", "10",
                   "--batch-size", "4", "--device", "cpu", "--json"], tmp_path)
    assert summary(widened)["step"] == 10


@pytest.mark.slow
def test_an_error_on_one_rank_ends_every_rank(tmp_path):
    bad = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cdt",
               "train", "--preset", "tiny", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "r"),
               "--device", "cpu"],
              tmp_path, timeout=120)
    assert bad.returncode != 0
    assert "data file not found" in bad.stderr


def test_gradient_accumulation_runs_in_one_process(tmp_path):
    from cdt.train import train
    from tests.helpers import tiny_config

    result = train(tiny_config(grad_accum=2, max_iters=3, eval_interval=3), tmp_path / "acc")
    assert result.step == 3 and result.final_eval["val_bpc"] > 0


def test_compile_failure_falls_back_to_eager_with_a_message(tmp_path, monkeypatch, capsys):
    from cdt.train import train
    from tests.helpers import tiny_config

    def broken_compile(module, **kw):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = tiny_config(max_iters=2, eval_interval=2)
    cfg.train.compile = True
    result = train(cfg, tmp_path / "c")
    assert result.step == 2
    assert "torch.compile failed (RuntimeError: no C++ compiler here); continuing without --compile" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_in_bf16_autocast(tmp_path):
    from cdt.train import train
    from tests.helpers import tiny_config

    cfg = tiny_config(max_iters=3, eval_interval=3, device="cuda")
    result = train(cfg, tmp_path / "gpu")
    assert result.step == 3 and result.final_eval["val_bpc"] > 0


@pytest.mark.slow  # Muon is tested in one process, DDP with AdamW in the fast suite
def test_muon_trains_under_torchrun(tmp_path):
    out = tmp_path / "muon"
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cdt",
                "train", *COMMON, "--batch-size", "4", "--optimizer", "muon", "--out", str(out)], tmp_path)
    assert summary(proc)["config"]["train"]["optimizer"] == "muon"
    assert set(checkpoint.load(out).optimizer_state) == {"adamw", "muon"}


def test_a_rank_without_a_gpu_is_a_one_line_error(monkeypatch):
    """torchrun --nproc_per_node=2 with --device auto on a machine with one GPU: rank 1 has none."""
    from cdt import distributed
    from cdt.errors import CdtError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device reached for a missing GPU"))
    with pytest.raises(CdtError, match=r"process 1 of this machine needs a GPU of its own, and 1 is visible: "
                                       r"start at most 1 per machine \(--nproc_per_node\), or train on the CPU"):
        distributed.setup(distributed.DistInfo(rank=1, world_size=2, local_rank=1), torch.device("cuda"))
