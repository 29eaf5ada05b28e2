"""The training loop: it learns, it resumes bit for bit, it refuses what it must."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cdt import checkpoint
from cdt.errors import CdtError
from cdt.optim import lr_at
from cdt.rundir import Reporter, StopRequest
from cdt.train import critic_alpha, train

from tests.helpers import evals, same_state, tiny_config


def test_schedules():
    cfg = tiny_config(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110).train
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55) and lr_at(110, cfg) == pytest.approx(0.1)
    cfg = tiny_config(critic_alpha_start=0.2, critic_alpha_end=1.0, critic_warmup_start=10, critic_warmup_end=30).train
    assert [critic_alpha(s, cfg) for s in (0, 10, 20, 30, 99)] == pytest.approx([0.2, 0.2, 0.6, 1.0, 1.0])


def test_loss_falls_and_files_are_written(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(max_iters=60, eval_interval=20), out)
    e = evals(out)
    assert [r["step"] for r in e] == [20, 40, 60]
    assert e[-1]["val_nelbo"] < e[0]["val_nelbo"] - 0.2  # nats per character
    assert 0.0 <= e[-1]["critic_auroc"] <= 1.0 and e[-1]["critic_p_wrong"] is not None
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "config.yaml", "metrics.jsonl"}
    assert result.step == 60 and result.final_eval == e[-1]
    assert checkpoint.load(out).extra["eval"] == e[-1]


class StopAt(Reporter):
    def __init__(self, stop, step):
        self.stop, self.step = stop, step

    def on_log(self, record):
        if record["step"] >= self.step:
            self.stop.signal_name = "SIGTERM"


@pytest.mark.parametrize("optimizer", [pytest.param("adamw", marks=pytest.mark.slow), "muon"])  # muon: the default
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, optimizer):
    cfg = dict(max_iters=24, eval_interval=10, log_interval=5, optimizer=optimizer)
    train(tiny_config(**cfg), tmp_path / "full")
    stop = StopRequest()
    part = train(tiny_config(**cfg), tmp_path / "part", reporter=StopAt(stop, 15), stop=stop)
    assert part.interrupted == "SIGTERM" and part.step == 15
    assert checkpoint.load(tmp_path / "part").step == 15
    resumed = train(tiny_config(**cfg), tmp_path / "part", resume=True)
    assert resumed.resumed_from == 15 and resumed.step == 24
    same_state(tmp_path / "full", tmp_path / "part")
    assert evals(tmp_path / "full") == evals(tmp_path / "part")  # the log has no duplicated or lost steps


@pytest.mark.slow  # 20 s of real processes; test_interrupted_then_resumed_equals_uninterrupted checks resume in-process
def test_sigterm_to_a_real_process_saves_and_resumes_exactly(tmp_path):
    """A real `cdt train` process: SIGTERM a few steps in, resume, and land on the uninterrupted run's state."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    args = [sys.executable, "-m", "cdt", "train", "--preset", "tiny", "--max-iters", "60", "--eval-interval", "1000",
            "--set", "train.log_interval=1"]
    part = tmp_path / "part"
    proc = subprocess.Popen(args + ["--out", str(part)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    log = part / "metrics.jsonl"
    for _ in range(2400):  # wait (at most ~2 minutes) until a few steps are logged
        if log.exists() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "stopped by SIGTERM" in err.decode() and "--resume" in err.decode()
    stopped_at = checkpoint.load(part).step
    assert 3 <= stopped_at < 60
    subprocess.run(args + ["--out", str(part), "--resume", "--json"], check=True, env=env, capture_output=True)
    subprocess.run(args + ["--out", str(tmp_path / "full"), "--json"], check=True, env=env, capture_output=True)
    same_state(tmp_path / "full", part)


def test_existing_run_is_never_overwritten(tiny_run):
    before = (tiny_run / "checkpoint.pt").read_bytes()
    with pytest.raises(CdtError, match="already holds a run"):
        train(tiny_config(), tiny_run)
    assert (tiny_run / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_another_architecture_or_vocabulary(tiny_run, tmp_path):
    cfg = tiny_config(max_iters=40)
    cfg.model.d_model = 64
    with pytest.raises(CdtError, match="different architecture.*d_model 32 vs 64"):
        train(cfg, tiny_run, resume=True)
    text = tmp_path / "t.txt"
    text.write_text("just a few words of plain text, repeated. " * 20)
    cfg = tiny_config(max_iters=40)
    cfg.data.source = str(text)
    with pytest.raises(CdtError, match="another vocabulary"):
        train(cfg, tiny_run, resume=True)


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(CdtError, match="no checkpoint"):
        train(tiny_config(), tmp_path / "empty", resume=True)


def test_trains_on_a_text_file_with_every_position_maskable(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 60, encoding="utf-8")
    cfg = tiny_config(max_iters=10, eval_interval=10)
    cfg.data.source = str(text)
    cfg.model.block_size = 64
    result = train(cfg, tmp_path / "run")
    assert result.step == 10 and checkpoint.load(tmp_path / "run").extra["mask_region"] == "all"


def test_model_without_critic_trains(tmp_path):
    cfg = tiny_config(max_iters=5, eval_interval=5)
    cfg.model.critic = "none"
    result = train(cfg, tmp_path / "run")
    assert "critic_auroc" not in result.final_eval and result.final_eval["val_bpc"] > 0


@pytest.mark.slow  # 5-7 s; the README's test command stays near 3 minutes
def test_copy_head_trains_resumes_and_samples(tmp_path):
    """The copy head learns, rebuilds from its checkpoint, resumes exactly and feeds the sampler."""
    from cdt.sampling.loop import generate
    from cdt.settings import SampleConfig
    from cdt.vocab import MASK_ID

    cfg = dict(max_iters=40, eval_interval=20, log_interval=5)
    copy = lambda c: (setattr(c.model, "copy", True), c)[1]  # noqa: E731
    train(copy(tiny_config(**cfg)), tmp_path / "full")
    e = evals(tmp_path / "full")
    assert e[-1]["val_nelbo"] < e[0]["val_nelbo"]
    stop = StopRequest()
    train(copy(tiny_config(**cfg)), tmp_path / "part", reporter=StopAt(stop, 25), stop=stop)
    train(copy(tiny_config(**cfg)), tmp_path / "part", resume=True)
    same_state(tmp_path / "full", tmp_path / "part")
    ck = checkpoint.load(tmp_path / "full")
    assert ck.config.model.copy and any(k.startswith("copy.") for k in ck.model_state)
    ids = torch.tensor([ck.vocab.encode("Hi there") + [MASK_ID] * 6])
    protected = ids != MASK_ID
    gen = generate(ck.build_model(torch.device("cpu")), ids, protected, SampleConfig(steps=3))
    assert (gen.tokens[~protected] >= 3).all()


class CrashAt(Reporter):
    def on_log(self, record):
        if record["step"] == 10:
            raise RuntimeError("disk on fire")


def test_a_crash_keeps_the_last_completed_step(tmp_path):
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(tiny_config(max_iters=30, eval_interval=100, log_interval=5), tmp_path / "run", reporter=CrashAt())
    assert checkpoint.load(tmp_path / "run").step == 10
    resumed = train(tiny_config(max_iters=12, eval_interval=100), tmp_path / "run", resume=True)
    assert resumed.resumed_from == 10 and resumed.step == 12


def test_resume_of_a_finished_run_asks_for_more_steps(tiny_run):
    from cdt.errors import UsageError
    with pytest.raises(UsageError, match="pass --max-iters above 30"):
        train(tiny_config(), tiny_run, resume=True)


def test_validation_nelbo_does_not_depend_on_the_training_weighting():
    from cdt.data import load_corpus
    from cdt.model import DiffusionLM
    from cdt.train import evaluate

    cfg = tiny_config()
    corpus = load_corpus("toolcalls", cfg.model.block_size, 400)
    cfg.model.vocab_size = len(corpus.vocab)
    torch.manual_seed(0)
    model = DiffusionLM(cfg.model)
    cfg.train.loss_weighting = "nelbo"
    nelbo = evaluate(model, corpus, cfg, torch.device("cpu"))
    cfg.train.loss_weighting = "flat"
    flat = evaluate(model, corpus, cfg, torch.device("cpu"))
    assert nelbo["val_nelbo"] == flat["val_nelbo"] and nelbo["masked_acc"] == flat["masked_acc"]


def test_flat_weighting_trains(tmp_path):
    result = train(tiny_config(max_iters=20, eval_interval=10, loss_weighting="flat"), tmp_path / "run")
    e = evals(tmp_path / "run")
    assert result.step == 20 and e[-1]["val_nelbo"] < e[0]["val_nelbo"]


class LookupModel(torch.nn.Module):
    """A stand-in generator: fills masks from known clean rows (oracle) or with one character."""

    def __init__(self, rows_by_prompt, sep_id, constant=None, vocab_size=120):
        super().__init__()
        self.rows, self.sep, self.constant, self.v = rows_by_prompt, sep_id, constant, vocab_size
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return ids

    def generator_logits(self, ids, _ids):
        out = torch.zeros(*ids.shape, self.v)
        for i, row in enumerate(ids):
            head = tuple(row[: row.tolist().index(self.sep) + 1].tolist())
            truth = self.rows[head] if self.constant is None else [self.constant] * len(row)
            for j, tok in enumerate(truth[: len(row)]):
                out[i, j, tok] = 1.0
        return out


def test_value_accuracy_against_an_oracle_and_a_constant_guess():
    from cdt.data import SEPARATOR, load_corpus
    from cdt.train import value_accuracy

    corpus = load_corpus("toolcalls", 256, 300)
    records, vocab = corpus.records[:10], corpus.vocab
    sep = vocab.encode(SEPARATOR)[0]
    rows = {tuple(vocab.encode(r.prompt + SEPARATOR)): vocab.encode(r.prompt + SEPARATOR + r.answer) for r in records}
    n_fields = sum(len(r.arguments) for r in records)
    assert value_accuracy(LookupModel(rows, sep, vocab_size=len(vocab)), records, vocab, torch.device("cpu"), 7) == 1.0
    guess = LookupModel(rows, sep, constant=vocab.encode("x")[0], vocab_size=len(vocab))
    assert value_accuracy(guess, records, vocab, torch.device("cpu")) == 0.0
    assert n_fields > 20


def test_a_zero_critic_weight_skips_the_critic_pass(tmp_path):
    """Before the critic's warm-up starts with weight 0, a step is the generator's pass alone."""
    from cdt.train import train

    cfg = tiny_config(max_iters=4, eval_interval=4, log_interval=1, critic_alpha_start=0.0, critic_warmup_start=2,
                      critic_warmup_end=3)
    train(cfg, tmp_path / "r")
    logged = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert [x["critic_loss"] is None for x in logged] == [True, True, True, False]  # alpha(step 2) is still 0
    assert logged[0]["loss"] == logged[0]["gen_loss"]
