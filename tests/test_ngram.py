"""Hashed character n-gram embeddings (model.ngram): what each position looks up, and that they train."""

import pytest
import torch

from cdt import checkpoint
from cdt.config import ModelConfig, RunConfig, resolve, parse_override
from cdt.errors import UsageError
from cdt.model import DiffusionLM, ngram_ids
from cdt.optim import make_optimizer
from cdt.vocab import MASK_ID, PAD_ID

B = 64  # buckets per size in these tests


def test_each_size_hashes_exactly_the_characters_ending_at_the_position():
    ids = torch.tensor([[5, 6, 7, 5, 6, 7, 8]])
    got = ngram_ids(ids, 4, B)[0]  # (n, 3): sizes 2, 3, 4
    assert got.shape == (7, 3)
    assert got[1, 0] == got[4, 0]  # "5 6" ends at 1 and at 4
    assert got[2, 1] == got[5, 1]  # "5 6 7" ends at 2 and at 5
    assert got[2, 0] == got[5, 0]  # so does "6 7"
    wide = ngram_ids(ids, 4, 4096)[0]  # enough buckets that these few strings do not collide
    assert (wide[3] != wide[6]).all()  # "7 5", "6 7 5", "5 6 7 5" against "7 8", "6 7 8", "5 6 7 8"
    # the same bigram after different characters: its bigram row is shared, its trigram row is not
    a, b = ngram_ids(torch.tensor([[9, 5, 6]]), 3, 4096)[0], ngram_ids(torch.tensor([[10, 5, 6]]), 3, 4096)[0]
    assert a[2, 0] == b[2, 0] and a[2, 1] != b[2, 1]


def test_sizes_use_disjoint_rows_and_the_row_start_is_its_own_character():
    ids = torch.randint(3, 40, (4, 30))
    got = ngram_ids(ids, 5, B)
    for k in range(4):  # size k + 2 lives in rows [k B, (k + 1) B)
        assert (got[..., k] >= k * B).all() and (got[..., k] < (k + 1) * B).all()
    # the bigram at position 0 is (row start, 7), which must not hash like the real pair (7, 7) after it
    row = torch.tensor([[7, 7]])
    first, second = ngram_ids(row, 2, 4096)[0, :, 0]
    assert first != second  # "^7" differs from "77"


def test_hashes_do_not_overflow_on_long_rows_and_large_ids():
    ids = torch.randint(0, 5000, (2, 512))
    got = ngram_ids(ids, 8, 4096)
    assert (got >= 0).all() and (got < 7 * 4096).all()


def make(**kw):
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=20, d_model=32, n_layers=2, n_heads=2, block_size=24, ngram=3,
                                   ngram_buckets=B, **kw))


def test_the_table_receives_gradients_and_changes_the_output():
    m = make().train()
    ids = torch.randint(3, 20, (3, 16))
    ids[:, ::4] = MASK_ID
    m.generator_logits(m(ids), ids)[..., 3:].log_softmax(-1).mean().neg().backward()
    rows = ngram_ids(ids, 3, B).unique()
    grad = m.ngram.weight.grad
    assert grad[rows].abs().sum(1).gt(0).all()  # every looked-up row learns
    untouched = torch.ones(len(grad), dtype=torch.bool)
    untouched[rows] = False
    assert grad[untouched].abs().sum() == 0  # and no other
    m.eval()
    before = m(ids)
    with torch.no_grad():
        m.ngram.weight[rows[0]] += 1.0
    assert not torch.allclose(before, m(ids))


def test_padding_still_changes_nothing_before_it():
    m = make().eval()
    ids = torch.randint(3, 20, (1, 10))
    padded = torch.cat([ids, torch.full((1, 6), PAD_ID)], 1)
    assert torch.allclose(m(ids), m(padded)[:, :10], atol=1e-5)


def test_the_table_is_not_counted_as_model_parameters_and_goes_to_adamw():
    m = make()
    plain = DiffusionLM(ModelConfig(vocab_size=20, d_model=32, n_layers=2, n_heads=2, block_size=24))
    assert m.num_params() == plain.num_params()  # an embedding table, like the character embedding
    cfg = RunConfig()
    opt = make_optimizer(m, cfg.train)
    names = {id(p): n for n, p in m.named_parameters()}
    muon = {names[id(p)] for g in opt.parts["muon"].param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.parts["adamw"].param_groups for p in g["params"]}
    assert "ngram.weight" not in muon and "ngram.weight" in adamw


@pytest.mark.parametrize("value", ["1", "9", "-2"])
def test_sizes_outside_two_to_eight_are_refused(value):
    with pytest.raises(UsageError, match="model.ngram"):
        resolve(None, None, [parse_override(f"model.ngram={value}")])


def test_a_checkpoint_saved_before_ngram_existed_loads_without_it(tiny_run, tmp_path):
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    for key in ("ngram", "ngram_buckets"):
        del state["config"]["model"][key]
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / "checkpoint.pt")
    ck = checkpoint.load(old)
    assert ck.config.model.ngram == 0
    assert ck.build_model("cpu").ngram is None


def test_a_run_with_ngrams_trains_saves_and_rebuilds_the_same_model(tmp_path):
    from cdt.train import train

    cfg = resolve("tiny", overrides=[{"model": {"ngram": 3, "ngram_buckets": 256}, "train": {"max_iters": 12}}])
    result = train(cfg, tmp_path / "run")
    ck = checkpoint.load(tmp_path / "run")
    assert ck.config.model.ngram == 3 and ck.config.model.ngram_buckets == 256
    model = ck.build_model("cpu")
    assert model.ngram.weight.shape == (2 * 256, cfg.model.d_model)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(model.ngram.weight, state["ngram.weight"])
    assert result.step == 12
