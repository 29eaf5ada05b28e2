"""train.critic_rows: the critic's pass takes evenly spaced rows of the batch, the generator every row;
train.rollout_share: some of those rows filled by the sampler; the critic judged on its own generations."""

import pytest
import torch

import cdt.train as train_mod
from cdt import checkpoint
from cdt.config import RunConfig, resolve
from cdt.noise import get_schedule, sample_t
from cdt.vocab import MASK_ID

from tests.helpers import cli

B = 8


def step(tiny_model, rows: int):
    cfg, corpus, model = tiny_model
    g = torch.Generator().manual_seed(0)
    batch = corpus.batch(0, B, 0)
    return batch, train_mod.diffusion_step(model, batch, sample_t(B, g), get_schedule("loglinear"), cfg.train,
                                           "answer", g, torch.device("cpu"), critic_rows=rows)


@pytest.mark.parametrize("rows, picked", [(2, [0, 4]), (3, [0, 2, 5]), (1, [0])])
def test_the_critic_judges_evenly_spaced_rows_and_the_generator_all(tiny_model, rows, picked):
    batch, full = step(tiny_model, 0)
    _, part = step(tiny_model, rows)
    assert torch.equal(part.noisy, full.noisy) and torch.equal(part.gen_loss, full.gen_loss)
    art = part.artifacts
    assert art.critic_input.shape == (rows, batch.ids.shape[1]) and part.critic_logits.shape[0] == rows
    kept = part.noisy[picked] != MASK_ID  # the rows' own text (prompts differ from row to row)
    assert torch.equal(art.critic_input[kept], part.noisy[picked][kept])
    assert not (art.critic_input == MASK_ID).any()
    assert torch.equal(art.critic_target, art.critic_input != batch.ids[picked])
    assert torch.equal(art.critic_valid, part.masked[picked])
    assert part.critic_loss is not None and torch.isfinite(part.critic_loss)


@pytest.mark.parametrize("rows", [B, B + 5])
def test_as_many_rows_as_the_batch_or_more_is_every_row(tiny_model, rows):
    _, full = step(tiny_model, 0)
    _, same = step(tiny_model, rows)
    assert torch.equal(same.critic_logits, full.critic_logits) and torch.equal(same.critic_loss, full.critic_loss)


def test_a_run_with_critic_rows_trains_and_records_it(tmp_path):
    cfg = resolve("tiny", overrides=[{"train": {"max_iters": 12, "critic_rows": 2, "critic_warmup_start": 0,
                                                "critic_warmup_end": 0}}])
    result = train_mod.train(cfg, tmp_path / "run")
    assert result.step == 12
    ck = checkpoint.load(tmp_path / "run")
    assert ck.config.train.critic_rows == 2
    assert 0.0 <= ck.extra["eval"]["critic_auroc"] <= 1.0  # validation judges every row


def test_a_checkpoint_saved_before_critic_rows_existed_meant_every_row():
    assert RunConfig.from_dict({"train": {}}).train.critic_rows == 0


def test_a_negative_count_is_refused_with_one_line(tmp_path):
        
    res = cli("train", "--preset", "tiny", "--out", str(tmp_path / "r"),
              "--set", "train.critic_rows=-1")
    assert res.exit_code == 2 and "critic_rows" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_rollout_rows_hold_the_samplers_fill_labelled_the_one_way(monkeypatch):
    """train.rollout_share: the chosen critic rows are filled by the sampling loop itself (confidence, 1..K
    steps, only the corruption's [MASK] positions), their targets are input != clean as for every row, the
    model's training mode survives, and the same seed gives the same rows."""
    import cdt.sampling.loop as loop
    from cdt.config import TrainConfig
    from cdt.data import Batch
    from cdt.model import DiffusionLM
    from cdt.config import ModelConfig
    from cdt.noise import get_schedule
    from cdt.step import diffusion_step
    from cdt.vocab import MASK_ID

    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(vocab_size=30, d_model=32, n_layers=2, n_heads=2, block_size=24, critic="linear"))
    model.train()
    clean = torch.randint(3, 30, (8, 24))
    maskable = torch.zeros(8, 24, dtype=torch.bool)
    maskable[:, 8:] = True
    calls, real = [], loop.generate

    def recorded(m, ids, protected, cfg, **kw):
        out = real(m, ids, protected, cfg, **kw)
        calls.append((ids.clone(), protected.clone(), cfg, out.tokens.clone()))
        return out

    monkeypatch.setattr(loop, "generate", recorded)
    cfg = TrainConfig(rollout_share=0.5, rollout_steps=3)

    def step(seed):
        return diffusion_step(model, Batch(clean, maskable), torch.linspace(0.2, 1.0, 8), get_schedule("loglinear"),
                              cfg, "answer", torch.Generator().manual_seed(seed), torch.device("cpu"))

    out = step(5)
    assert model.training and len(calls) == 1
    ids, protected, sampler, tokens = calls[0]
    assert sampler.policy == "confidence" and 1 <= sampler.steps <= 3
    assert torch.equal(protected, ids != MASK_ID)
    rows = torch.arange(4) * 8 // 4
    art = out.artifacts
    assert torch.equal(ids, out.noisy[rows]) and torch.equal(art.critic_input[rows], tokens)
    assert not (art.critic_input == MASK_ID).any()
    assert torch.equal(art.critic_target, (art.critic_input != clean).float())
    assert torch.equal(art.critic_valid, out.noisy == MASK_ID)
    again = step(5)
    assert torch.equal(again.artifacts.critic_input, art.critic_input)


def test_the_rollout_figure_is_what_calibrate_finds_on_the_same_rows(tmp_path):
    """Training's "own fills" figure runs calibrate's default generation on the first validation rows: on
    a fresh checkpoint, `cdt calibrate --n-samples 8` finds the same token ECE and AUROC."""
    from cdt.calibrate import calibrate
    from cdt.settings import CalibrateSettings, from_flags

    cfg = resolve("tiny")
    cfg.train.max_iters, cfg.train.eval_interval, cfg.train.rollout_eval_rows = 20, 20, 8
    train_mod.train(cfg, tmp_path / "run")
    last = checkpoint.load(tmp_path / "run").extra["eval"]
    assert last["rollout_rows"] == 8
    result = calibrate(checkpoint.load(tmp_path / "run"), from_flags(CalibrateSettings, n_samples=8, bootstrap=0,
                                                                     device="cpu"), tmp_path / "s.jsonl", None)
    assert last["critic_rollout_ece"] == pytest.approx(result.tokens.ece, abs=1e-9)
    assert last["critic_rollout_auroc"] == pytest.approx(result.tokens.auroc, abs=2e-3)


def test_span_rollout_rows_fill_one_contiguous_run_of_the_corruptions_size(monkeypatch):
    """train.rollout_span: a rollout row's masked positions become one contiguous run of its maskable
    positions (as many as its corruption masked, at a seeded place); the sampler fills exactly that run,
    the critic is scored on it, targets stay input != clean, and the other rows are as without the option."""
    import cdt.sampling.loop as loop
    from cdt.config import ModelConfig, TrainConfig
    from cdt.data import Batch
    from cdt.model import DiffusionLM
    from cdt.noise import get_schedule
    from cdt.step import diffusion_step
    from cdt.vocab import MASK_ID, PAD_ID

    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(vocab_size=30, d_model=32, n_layers=2, n_heads=2, block_size=24, critic="linear"))
    clean = torch.randint(3, 30, (8, 24))
    maskable = torch.zeros(8, 24, dtype=torch.bool)
    maskable[:, 5:] = True
    calls, real = [], loop.generate

    def recorded(m, ids, protected, cfg, **kw):
        calls.append(ids.clone())
        return real(m, ids, protected, cfg, **kw)

    monkeypatch.setattr(loop, "generate", recorded)

    def step(span, scope="masked"):
        cfg = TrainConfig(rollout_share=0.5, rollout_steps=2, rollout_span=span, critic_scope=scope)
        return diffusion_step(model, Batch(clean, maskable), torch.linspace(0.2, 0.9, 8), get_schedule("loglinear"),
                              cfg, "answer", torch.Generator().manual_seed(3), torch.device("cpu"))

    plain, out = step(0.0), step(1.0)
    rows = torch.arange(4) * 8 // 4
    start, noisy = calls[-1], out.noisy[rows]
    assert torch.equal(plain.noisy, out.noisy)  # the corruption itself is untouched
    for i in range(4):
        where = (start[i] == MASK_ID).nonzero().flatten()
        assert len(where) == int((noisy[i] == MASK_ID).sum())  # the same count ...
        assert len(where) == 0 or (where.min() >= 5 and where.max() - where.min() + 1 == len(where))  # ... one run
        assert torch.equal(start[i][start[i] != MASK_ID], clean[rows[i]][start[i] != MASK_ID])
    art = out.artifacts
    assert torch.equal(art.filled[rows], start == MASK_ID)
    assert torch.equal(art.critic_valid[rows], start == MASK_ID)
    assert torch.equal(art.critic_target, (art.critic_input != clean).float())
    others = torch.tensor([i for i in range(8) if i not in rows.tolist()])
    assert torch.equal(art.critic_input[others], plain.artifacts.critic_input[others])
    assert torch.equal(art.critic_valid[others], plain.artifacts.critic_valid[others])
    # scope masked+context: every non-[PAD] position is still scored
    assert torch.equal(step(1.0, "masked+context").artifacts.critic_valid, clean != PAD_ID)
    # the run's start place is seeded: same seed, same run
    step(1.0)
    assert torch.equal(calls[-1], start)
