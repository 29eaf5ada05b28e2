"""Hashed whole-word embeddings (model.word_buckets): which row each position reads, and that a run keeps them."""

import pytest
import torch

from cdt import checkpoint
from cdt.config import ModelConfig, RunConfig, parse_override, resolve
from cdt.errors import UsageError
from cdt.model import DiffusionLM, ngram_ids, word_ids
from cdt.optim import make_optimizer
from cdt.vocab import MASK_ID, PAD_ID, Vocab

VOCAB = Vocab.from_text("abcdefghijklmnopqrstuvwxyz0123456789 ,:-")
WORD = VOCAB.word_characters()


def rows(text: str, buckets: int = 1 << 20) -> list[int]:
    return word_ids(torch.tensor([VOCAB.encode(text)]), WORD, buckets)[0].tolist()


def test_word_characters_are_the_letters_and_digits_and_never_a_special():
    chars = {c for c in VOCAB.chars if WORD[VOCAB.id_of(c)]}
    assert chars == set("abcdefghijklmnopqrstuvwxyz0123456789")
    assert not WORD[[MASK_ID, PAD_ID, 2]].any()


def test_the_same_word_reads_the_same_row_wherever_it_stands():
    a, b = rows("for seven"), rows("flights on the 7 seven")
    assert a[-5:] == b[-5:]  # s, se, sev, seve, seven: the word so far, not what stands before it
    # the same characters in another word, or after a word character, are another row
    assert rows("eleven")[-1] != rows("seven")[-1]
    assert rows("xseven")[-1] != rows("seven")[-1]


def test_where_the_character_ngrams_share_a_row_the_words_do_not():
    """"seven" and "eleven" end in the same four characters: every n-gram row at their last
    character is shared, and only the word row tells them apart."""
    s, e = torch.tensor([VOCAB.encode("seven")]), torch.tensor([VOCAB.encode("eleven")])
    assert torch.equal(ngram_ids(s, 4, 4096)[0, -1], ngram_ids(e, 4, 4096)[0, -1])
    assert rows("seven")[-1] != rows("eleven")[-1]


def test_separators_and_masks_end_a_word():
    assert rows("ab cd")[3:] == rows("cd")  # the space starts a new word
    assert rows("ab,cd")[3:] == rows("cd")
    ids = torch.tensor([VOCAB.encode("abcd")])
    ids[0, 1] = MASK_ID  # a[MASK]cd: "cd" is read as a word of its own
    assert word_ids(ids, WORD, 1 << 20)[0, 2:].tolist() == rows("cd")


def test_a_word_longer_than_the_window_is_hashed_over_its_last_characters():
    long = "a" * 20
    got = word_ids(torch.tensor([VOCAB.encode(long)]), WORD, 1 << 20, max_len=4)[0]
    assert got[3] == got[10] == got[19]  # "aaaa" from the fourth character on
    assert got[2] != got[3]


def test_rows_stay_inside_the_table_on_long_rows_and_large_ids():
    ids = torch.randint(0, 5000, (2, 512))
    word = torch.rand(5000) < 0.9
    got = word_ids(ids, word, 4096)
    assert (got >= 0).all() and (got < 4096).all()


def make(**kw):
    torch.manual_seed(0)
    m = DiffusionLM(ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=2, n_heads=2, block_size=24,
                                word_buckets=64, **kw))
    m.word_char.copy_(WORD)
    return m


def test_only_word_positions_read_the_table_and_every_row_read_learns():
    m = make().train()
    ids = torch.tensor([VOCAB.encode("ab cd, 12:30 efg ab")])
    ids[0, 4] = MASK_ID
    m.generator_logits(m(ids), ids)[..., 3:].log_softmax(-1).mean().neg().backward()
    inside = WORD[ids[0]]
    read = word_ids(ids, WORD, 64)[0][inside].unique()
    grad = m.words.weight.grad
    assert grad[read].abs().sum(1).gt(0).all()
    others = torch.ones(64, dtype=torch.bool)
    others[read] = False
    assert grad[others].abs().sum() == 0  # nothing from the separators, the mask or unread rows


def test_which_characters_make_words_changes_the_output():
    m = make().eval()
    ids = torch.tensor([VOCAB.encode("for seven adults")])
    before = m(ids)
    with torch.no_grad():
        m.word_char.zero_()
    assert not torch.allclose(before, m(ids))


def test_padding_still_changes_nothing_before_it():
    m = make().eval()
    ids = torch.tensor([VOCAB.encode("for seven adults")])
    padded = torch.cat([ids, torch.full((1, 6), PAD_ID)], 1)
    assert torch.allclose(m(ids), m(padded)[:, : ids.shape[1]], atol=1e-5)


def test_the_table_is_not_counted_as_model_parameters_and_goes_to_adamw():
    m = make()
    plain = DiffusionLM(ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=2, n_heads=2, block_size=24))
    assert m.num_params() == plain.num_params()
    opt = make_optimizer(m, RunConfig().train)
    names = {id(p): n for n, p in m.named_parameters()}
    muon = {names[id(p)] for g in opt.parts["muon"].param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.parts["adamw"].param_groups for p in g["params"]}
    assert "words.weight" not in muon and "words.weight" in adamw
    assert "word_char" not in names.values()  # a buffer, never trained


def test_a_negative_table_size_is_refused():
    with pytest.raises(UsageError, match="model.word_buckets"):
        resolve(None, None, [parse_override("model.word_buckets=-1")])


def test_off_by_default_and_in_older_checkpoints(tiny_run):
    assert RunConfig().model.word_buckets == 0
    ck = checkpoint.load(tiny_run)
    assert ck.config.model.word_buckets == 0 and ck.build_model("cpu").words is None


def test_a_run_with_words_trains_saves_and_rebuilds_the_same_model(tmp_path):
    from cdt.train import train

    cfg = resolve("tiny", overrides=[{"model": {"word_buckets": 128}, "train": {"max_iters": 6}}])
    train(cfg, tmp_path / "run")
    ck = checkpoint.load(tmp_path / "run")
    assert ck.config.model.word_buckets == 128
    model = ck.build_model("cpu")
    assert torch.equal(model.word_char, ck.vocab.word_characters())  # kept by the checkpoint, not rebuilt
    assert model.word_char.sum() == sum(c.isalnum() for c in ck.vocab.chars)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(model.words.weight, state["words.weight"])
    ids = torch.tensor([ck.vocab.encode("Set an alarm for seven")])
    fresh = DiffusionLM(ck.config.model)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.eval()(ids), model(ids))
