"""train.critic_rows: the critic's pass takes evenly spaced rows of the batch, the generator every row."""

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
