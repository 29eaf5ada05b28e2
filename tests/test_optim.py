"""The optimisers: which parameters Muon takes, the rates each group follows, what one Muon step does."""

import json

import pytest
import torch

from cdt import checkpoint
from cdt.config import RunConfig
from cdt.errors import CdtError, UsageError
from cdt.model import DiffusionLM
from cdt.optim import MuonAdamW, lr_at, make_optimizer, set_learning_rates, state_kind
from cdt.train import train

from tests.helpers import cli, evals, tiny_config


def small_model(copy: bool = True, critic: str = "mlp") -> tuple[DiffusionLM, RunConfig]:
    cfg = RunConfig()
    cfg.model.vocab_size, cfg.model.d_model, cfg.model.n_layers = 20, 32, 2
    cfg.model.copy, cfg.model.critic = copy, critic
    cfg.train.optimizer = "muon"
    return DiffusionLM(cfg.model), cfg


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model, cfg = small_model()
    opt = make_optimizer(model, cfg.train)
    assert isinstance(opt, MuonAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.parts["muon"].param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.parts["adamw"].param_groups for p in g["params"]}
    expected = {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.0", "mlp.2")}
    expected |= {"copy.q.weight", "copy.k.weight", "critic.0.weight"}  # the mlp critic's hidden layer
    assert muon == expected
    assert adamw == set(names.values()) - expected  # every parameter once
    assert {"embed.weight", "copy.gate.weight", "critic.3.weight"} <= adamw  # tied head, one-row heads
    decay = {names[id(p)] for p in opt.parts["adamw"].param_groups[0]["params"]}
    assert decay == {n for n in adamw if model.get_parameter(n).dim() == 2}  # no decay on norms and biases


def test_learned_positions_are_a_lookup_table_for_adamw_not_a_matrix_for_muon():
    model, cfg = small_model()
    cfg.model.positions = "learned"
    model = DiffusionLM(cfg.model)
    opt = make_optimizer(model, cfg.train)
    adamw = {id(p) for g in opt.parts["adamw"].param_groups for p in g["params"]}
    muon = {id(p) for g in opt.parts["muon"].param_groups for p in g["params"]}
    assert id(model.pos.weight) in adamw and id(model.pos.weight) not in muon


def test_resuming_a_run_whose_optimizer_split_the_parameters_otherwise_is_one_line(tmp_path, monkeypatch):
    """An earlier cdt gave learned positions to Muon: its optimizer state does not fit today's groups."""
    import cdt.optim

    out = tmp_path / "old"
    overrides = ["--preset", "tiny", "--optimizer", "muon", "--set", "model.positions=learned", "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(cdt.optim, "LOOKUP_TABLES", ("embed.weight", "ngram.weight"))
        assert cli("train", *overrides, "--max-iters", "4").exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()
    refused = cli("train", "--out", str(out), "--resume", "--max-iters", "6")
    assert refused.exit_code == 1, refused.output
    assert "other parameter groups" in refused.output and "Traceback" not in refused.output
    assert (out / "checkpoint.pt").read_bytes() == before


def test_adamw_alone_is_a_plain_adamw():
    model, cfg = small_model()
    cfg.train.optimizer = "adamw"
    opt = make_optimizer(model, cfg.train)
    assert type(opt) is torch.optim.AdamW
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_every_group_follows_the_schedule_scaled_to_its_own_peak():
    model, cfg = small_model()
    tc = cfg.train
    tc.lr, tc.muon_lr, tc.min_lr, tc.warmup_iters, tc.max_iters = 0.002, 0.03, 0.0002, 10, 110
    opt = make_optimizer(model, tc)
    for step in (0, 5, 10, 60, 110):
        logged = set_learning_rates(opt, step, tc)
        assert logged == pytest.approx(lr_at(step, tc))
        assert [g["lr"] for g in opt.parts["adamw"].param_groups] == pytest.approx([logged] * 2)
        assert opt.parts["muon"].param_groups[0]["lr"] == pytest.approx(logged * 15)
    assert opt.parts["muon"].param_groups[0]["lr"] == pytest.approx(0.003)  # the floor: min_lr / lr of the peak


def test_one_muon_step_is_an_orthogonalised_update_at_muon_lr():
    """A plain gradient step keeps the gradient's spread of singular values; Muon's flattens it."""
    torch.manual_seed(0)
    model, cfg = small_model(copy=False, critic="linear")
    tc = cfg.train
    tc.weight_decay, tc.muon_lr = 0.0, 0.01
    w = model.get_parameter("blocks.0.mlp.0.weight")  # 128 x 32: Muon scales it by sqrt(128 / 32) = 2
    u, _, v = torch.linalg.svd(torch.randn(w.shape), full_matrices=False)
    spread = torch.logspace(0, -2, w.shape[1])  # singular values from 1 to 0.01
    opt = make_optimizer(model, tc)
    set_learning_rates(opt, tc.warmup_iters, tc)  # the peak
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    w.grad = (u * spread) @ v
    before = w.detach().clone()
    opt.step()
    s = torch.linalg.svdvals(before - w.detach())
    assert s.max() / s.min() < 4  # the gradient's ratio is 100
    assert 0.5 * 0.01 * 2 < s.mean() < 1.5 * 0.01 * 2
    # the update points against the gradient
    assert torch.sum((before - w.detach()) * w.grad) > 0


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_weight_decay_shrinks_every_matrix_at_its_own_rate_and_nothing_else(decay):
    """With zero gradients a step is the decay alone: Muon's matrices x (1 - muon_lr * wd), AdamW's
    matrices (embedding, heads) x (1 - lr * wd), vectors untouched; the default decays nothing."""
    assert RunConfig().train.weight_decay == 0.0
    model, cfg = small_model()
    tc = cfg.train
    tc.weight_decay = decay
    opt = make_optimizer(model, tc)
    set_learning_rates(opt, tc.warmup_iters, tc)  # the peak
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    muon = {id(p) for p in opt.parts["muon"].param_groups[0]["params"]}
    for name, p in model.named_parameters():
        if id(p) in muon:
            factor = 1 - tc.muon_lr * decay
        elif p.dim() >= 2:
            factor = 1 - tc.lr * decay
        else:
            factor = 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)


def test_state_kind_tells_the_saved_optimizers_apart():
    model, cfg = small_model()
    assert state_kind(make_optimizer(model, cfg.train).state_dict()) == "muon"
    cfg.train.optimizer = "adamw"
    assert state_kind(make_optimizer(model, cfg.train).state_dict()) == "adamw"
    assert state_kind(None) is None


@pytest.mark.slow  # a quality comparison of two trainings: run by .ci/run after the fast suite
def test_muon_learns_on_tiny_data_at_least_as_fast_as_adamw(tmp_path):
    final = {}
    for name in ("adamw", "muon"):
        train(tiny_config(max_iters=60, eval_interval=20, optimizer=name), tmp_path / name)
        e = [r["val_nelbo"] for r in evals(tmp_path / name)]
        assert e[-1] < e[0] - 0.3  # nats per character
        final[name] = e[-1]
    state = checkpoint.load(tmp_path / "muon")
    assert state_kind(state.optimizer_state) == "muon" and state.config.train.optimizer == "muon"
    assert final["muon"] <= final["adamw"] + 0.02


def test_resume_refuses_the_other_optimizer_and_overwrites_nothing(tiny_run):
    before = (tiny_run / "checkpoint.pt").read_bytes()
    with pytest.raises(CdtError, match="train.optimizer=adamw, not muon"):
        train(tiny_config(max_iters=200, optimizer="muon"), tiny_run, resume=True)
    assert (tiny_run / "checkpoint.pt").read_bytes() == before


def test_an_unknown_optimizer_or_rate_is_a_usage_error():
    with pytest.raises(UsageError, match="adamw, muon"):
        tiny_config(optimizer="sgd")
    with pytest.raises(UsageError, match="muon_lr"):
        tiny_config(muon_lr=0)


def test_a_checkpoint_older_than_the_muon_default_loads_and_resumes_as_it_was_trained(tiny_run, tmp_path):
    """Checkpoints saved before `train.optimizer` existed hold AdamW state and no copy head."""
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    del state["config"]["train"]["optimizer"], state["config"]["model"]["copy"]
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / "checkpoint.pt")
    cfg = checkpoint.load(old).config
    assert cfg.train.optimizer == "adamw" and cfg.model.copy is False
    cfg.train.max_iters = state["step"] + 5
    assert train(cfg, old, resume=True).step == state["step"] + 5


def test_the_optimizer_flag_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--preset", "tiny", "--optimizer", "muon", "--max-iters", "6",
                 "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["train"]["optimizer"] == "muon"
    assert state_kind(checkpoint.load(out).optimizer_state) == "muon"
    # resuming keeps it without the flag; the other optimizer is refused with the flag to pass
    assert cli("train", "--out", str(out), "--resume", "--max-iters", "8", "--json").exit_code == 0
    refused = cli("train", "--out", str(out), "--resume", "--max-iters", "10", "--optimizer", "adamw")
    assert refused.exit_code == 1 and "pass --set train.optimizer=muon" in refused.output
    bad = cli("train", "--preset", "tiny", "--optimizer", "sgd", "--out", str(tmp_path / "x"))
    assert bad.exit_code == 2 and "adamw, muon" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "x").exists()


def test_training_on_past_the_end_re_spreads_the_schedule_as_the_hint_says(tmp_path):
    """The README and the hint after `cdt train`: a finished run resumed to twice its steps continues at about
    half the peak rate, not at the floor it ended on."""
    from dataclasses import replace

    tc = RunConfig().train
    assert lr_at(tc.max_iters, tc) == pytest.approx(tc.min_lr)
    resumed = lr_at(tc.max_iters, replace(tc, max_iters=2 * tc.max_iters))
    assert 0.45 * tc.lr < resumed < 0.6 * tc.lr
    out = tmp_path / "run"
    result = cli("train", "--preset", "tiny", "--max-iters", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "--resume --max-iters 8   # train on: the rate schedule is re-spread over the new total" in result.stdout
