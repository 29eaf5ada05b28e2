"""The weights' moving average: hand-computed updates, swapped in and out exactly, and what a run saves."""

import pytest
import torch

from cdt import checkpoint
from cdt.ema import WeightAverage
from cdt.train import evaluate, train
from cdt.data import load_corpus

from tests.helpers import tiny_config


def one_weight(value: float) -> torch.nn.Module:
    m = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_rate_warms_up_then_holds_the_decay():
    avg = WeightAverage(one_weight(0.0), decay=0.99)
    expected = {0: 1 - 1 / 10, 1: 1 - 2 / 11, 10: 1 - 11 / 20, 1000: 1 - 0.99}
    for updates, rate in expected.items():
        avg.updates = updates
        assert avg.rate() == pytest.approx(rate)


def test_updates_by_hand():
    m = one_weight(0.0)
    avg = WeightAverage(m, decay=0.5)
    with torch.no_grad():
        m.weight.fill_(1.0)
    avg.update()  # rate 0.9: 0 + 0.9 * (1 - 0)
    assert avg.average[0].item() == pytest.approx(0.9)
    with torch.no_grad():
        m.weight.fill_(3.0)
    avg.update()  # rate 9/11: 0.9 + 9/11 * (3 - 0.9)
    assert avg.average[0].item() == pytest.approx(0.9 + 9 / 11 * 2.1)
    avg.updates = 50
    avg.update()  # the decay itself from here: rate 0.5
    assert avg.average[0].item() == pytest.approx(0.5 * (0.9 + 9 / 11 * 2.1) + 0.5 * 3.0)
    assert m.weight.item() == 3.0  # the model's own weight is never touched by an update


def test_applied_swaps_the_average_in_and_the_raw_weights_back_even_on_error():
    m = one_weight(0.0)
    avg = WeightAverage(m, decay=0.9)
    with torch.no_grad():
        m.weight.fill_(2.0)
    avg.update()
    inside = avg.average[0].item()
    with avg.applied():
        assert m.weight.item() == inside
    assert m.weight.item() == 2.0
    with pytest.raises(RuntimeError), avg.applied():
        raise RuntimeError("boom")
    assert m.weight.item() == 2.0


def test_tied_generator_head_follows_the_average():
    from cdt.config import ModelConfig
    from cdt.model import DiffusionLM

    model = DiffusionLM(ModelConfig(vocab_size=20, d_model=16, n_layers=1, n_heads=2))
    avg = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    avg.update()
    with avg.applied():
        state = model.state_dict()
        tied = [k for k, v in state.items() if v.data_ptr() == model.embed.weight.data_ptr()]
        assert len(tied) >= 1 and all(torch.equal(state[k], avg.average[0]) for k in tied)


def test_a_run_saves_the_average_validates_it_and_keeps_the_raw_weights(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(max_iters=20, eval_interval=20), out)
    ckpt = checkpoint.load(out)
    assert ckpt.train_model_state is not None and ckpt.train_model_state.keys() == ckpt.model_state.keys()
    assert any(not torch.equal(ckpt.model_state[k], ckpt.train_model_state[k]) for k in ckpt.model_state)
    # the figures the run reported are those of the weights it saved for every later command
    cfg = ckpt.config
    corpus = load_corpus(cfg.data.source, cfg.model.block_size, cfg.data.n_records, cfg.data.seed,
                         cfg.data.scaffold, cfg.data.answer_tail)
    again = evaluate(ckpt.build_model(), corpus, cfg, torch.device("cpu"))
    assert again["val_nelbo"] == pytest.approx(result.final_eval["val_nelbo"], rel=1e-6)
    assert again["critic_auroc"] == pytest.approx(result.final_eval["critic_auroc"], rel=1e-6)


def test_ema_off_saves_the_raw_weights_alone(tmp_path):
    train(tiny_config(max_iters=10, eval_interval=10, ema=0.0), tmp_path / "run")
    assert checkpoint.load(tmp_path / "run").train_model_state is None


def test_ema_out_of_range_is_a_usage_error():
    from cdt.errors import UsageError

    with pytest.raises(UsageError, match="train.ema"):
        tiny_config(ema=1.0)


def test_a_run_without_an_average_resumes_with_one_started_from_its_weights(tmp_path):
    out = tmp_path / "run"
    train(tiny_config(max_iters=10, eval_interval=10, ema=0.0), out)
    raw = checkpoint.load(out).model_state
    resumed = train(tiny_config(max_iters=14, eval_interval=10, ema=0.99), out, resume=True)
    assert resumed.resumed_from == 10 and resumed.step == 14
    ckpt = checkpoint.load(out)
    assert ckpt.train_model_state is not None  # the raw weights of step 14 beside their new average
    assert any(not torch.equal(ckpt.train_model_state[k], raw[k]) for k in raw)
    assert any(not torch.equal(ckpt.model_state[k], ckpt.train_model_state[k]) for k in raw)
