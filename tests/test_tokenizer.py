"""Subword tokenizers (`--tokenizer bpe:SIZE|PATH`): cdt's ids, the corpus, the checkpoint, every command.

The real text is Python's pydoc topics (`pydoc_data/topics.py`, shipped with CPython): English prose
nobody here wrote, installed wherever the tests run.
"""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("tokenizers")

from cdt import checkpoint, tokenizer  # noqa: E402
from cdt.data import load_corpus  # noqa: E402
from cdt.errors import CdtError, UsageError  # noqa: E402
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID, Vocab  # noqa: E402
from tests.helpers import assert_one_line_error, cli, tiny_config  # noqa: E402


def topics_text(chars: int | None = None) -> str:
    import pydoc_data.topics

    text = "\n".join(pydoc_data.topics.topics.values())
    return text[:chars] if chars else text


@pytest.fixture(scope="module")
def bpe():
    return tokenizer.train_bpe(topics_text(60_000), 400)


def test_bpe_keeps_the_specials_first_and_is_deterministic(bpe):
    assert (bpe.inner_of == np.arange(len(bpe))).all() and len(bpe) == 400  # cdt's ids are the tokenizer's own
    assert bpe.pieces[:3] == ("[MASK]", "[PAD]", "[NULL]")
    assert tokenizer.train_bpe(topics_text(60_000), 400) == bpe  # the same text trains the same tokenizer
    ids = bpe.encode(topics_text()[100_000:102_000])
    assert min(ids) >= 3  # text never encodes to a special
    assert len(ids) < 2000 * 0.6  # merges learned from one part of the text compress another


@pytest.mark.parametrize("text", ["[NULL]", "fill the [MASK] here", "[PAD][PAD]", "<s>x</s> <mask>"])
def test_special_tokens_written_in_a_text_stay_text(text):
    """A request that says "[MASK]" is not asking for a mask: it encodes as ordinary pieces and comes back."""
    bpe = _shared_bpe()
    assert min(bpe.encode(text)) >= 3 and bpe.decode(bpe.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_text_round_trips_through_byte_level_bpe(text):
    bpe = _shared_bpe()
    assert bpe.decode(bpe.encode(text)) == text  # accents, other scripts, emoji: byte pieces, no unknowns
    assert bpe.unknown(text) == [] and bpe.reads_every_character


_CACHE = {}


def _shared_bpe():
    if "bpe" not in _CACHE:
        _CACHE["bpe"] = tokenizer.train_bpe(topics_text(30_000), 300)
    return _CACHE["bpe"]


def test_decode_shows_masks_drops_pad_and_null_and_joins_byte_pieces(bpe):
    ids = bpe.encode("déjà vu")
    assert len(ids) > 2  # é and à are two byte pieces each
    row = [MASK_ID] + ids[:2] + [PAD_ID] + ids[2:] + [NULL_ID, MASK_ID]
    assert bpe.decode(row, mask_char="░") == "░déjà vu░"
    assert bpe.decode(np.array(ids)) == "déjà vu"


def _wordpiece_file(tmp_path, mask="[MASK]", pad="[PAD]", config=True):
    """A tokenizer.json whose own ids put [PAD] at 0 and the mask token at 4, as BERT's do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator([topics_text(20_000)], trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=[pad, "[UNK]", "[CLS]", "[SEP]", mask], show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    if config:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"mask_token": mask, "pad_token": pad,
                                                                    "sep_token": "[SEP]"}))
    return tok


def test_a_tokenizer_file_is_renumbered_so_cdts_specials_come_first(tmp_path):
    inner = _wordpiece_file(tmp_path, mask="<mask>", pad="<pad>")
    tok = tokenizer.load_file(tmp_path)
    assert (tok.mask_token, tok.pad_token, tok.null_token) == ("<mask>", "<pad>", "[NULL]")
    assert len(tok) == inner.get_vocab_size() + 1  # [NULL] added
    assert tok.inner_of[:3].tolist() == [inner.token_to_id("<mask>"), inner.token_to_id("<pad>"), len(tok) - 1]
    assert (tok.cdt_of[tok.inner_of] == np.arange(len(tok))).all()  # a permutation and its inverse
    text = "the class statement"
    ids = tok.encode(text)
    assert tok.inner_of[ids].tolist() == inner.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == inner.decode(inner.encode(text, add_special_tokens=False).ids)
    # a model's own end token serves as [NULL] when asked (a backbone's table keeps its size)
    end = tokenizer.load_file(tmp_path, reuse_end=True)
    assert end.null_token == "[SEP]" and len(end) == inner.get_vocab_size()


def test_the_usual_spellings_are_found_without_a_config(tmp_path):
    _wordpiece_file(tmp_path, config=False)
    tok = tokenizer.load_file(tmp_path / "tokenizer.json")
    assert tok.inner_of[:2].tolist() == [4, 0]  # [MASK] and [PAD] by name


@pytest.mark.parametrize("spec, fragment", [
    ("bpe:", "whole number"), ("bpe:abc", "whole number"), ("bpe:100", "from 260"),
    ("no/such/tokenizer.json", "expected char, bpe:SIZE or a tokenizer.json"),
])
def test_bad_specs_are_one_line_usage_errors(spec, fragment, tmp_path):
    with pytest.raises(UsageError, match=fragment):
        tokenizer.check_spec(spec)
    result = cli("train", "--preset", "tiny", "--tokenizer", spec, "--out", tmp_path / "run")
    assert_one_line_error(result, 2, fragment)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_file_that_is_not_a_tokenizer_is_refused_in_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    with pytest.raises(CdtError, match="not a tokenizer.json") as e:
        tokenizer.load_file(tmp_path)
    assert "\n" not in str(e.value)


def test_without_the_extra_the_error_names_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now raises ImportError
    with pytest.raises(CdtError, match=r"pip install 'cdt\[hf\]'"):
        tokenizer.train_bpe("some text", 300)
    path = tmp_path / "t.txt"
    path.write_text(topics_text(5_000))
    result = cli("train", "--preset", "tiny", "--data", path, "--tokenizer", "bpe:300", "--out", tmp_path / "run")
    assert_one_line_error(result, 1, "pip install 'cdt[hf]'")


def test_the_text_corpus_learns_its_merges_from_the_training_part_alone(tmp_path):
    path = tmp_path / "t.txt"
    text = topics_text(40_000)
    path.write_text(text, encoding="utf-8")
    c = load_corpus(str(path), 64, tokenizer="bpe:300")
    cut = int(len(text) * 0.9)
    assert c.vocab == tokenizer.train_bpe(text[:cut], 300)
    assert c.info["val_tokens"] == len(c.vocab.encode(text[cut:])) == len(c.val.ids)
    assert c.info["chars_per_token"] == pytest.approx((len(text) - cut) / c.info["val_tokens"])
    assert c.vocab.decode(c.train.ids) == text[:cut]  # the stream is the text, token for token
    char = load_corpus(str(path), 64)
    assert isinstance(char.vocab, Vocab) and "chars_per_token" not in char.info  # char corpora as they were


def test_a_record_corpus_reads_prompts_and_answers_in_tokens():
    c = load_corpus("toolcalls", 256, 400, tokenizer="bpe:300")
    row, maskable = c.val.ids[0], c.val.maskable[0]
    r = c.records[0]
    assert c.vocab.decode(row[maskable]) == r.answer and c.vocab.decode(row[~maskable]) == r.prompt + "\n"
    assert 1 < c.info["chars_per_token"] < 6


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A tiny run on real English text with a byte-level BPE (nothing downloaded)."""
    root = tmp_path_factory.mktemp("bpe")
    (root / "topics.txt").write_text(topics_text(120_000), encoding="utf-8")
    out = root / "run"
    result = cli("train", "--preset", "tiny", "--data", root / "topics.txt", "--tokenizer", "bpe:300",
                 "--out", out, "--max-iters", 10, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_a_bpe_run_reports_bits_per_character_converted_from_tokens(bpe_run):
    out, doc = bpe_run
    ev, cpt = doc["final_eval"], doc["data"]["chars_per_token"]
    assert cpt > 1.2  # 41 merges beyond the bytes and the specials
    assert ev["val_bpc"] == pytest.approx(ev["val_bits_per_token"] / cpt)
    ck = checkpoint.load(out)
    assert ck.vocab == tokenizer.train_bpe(topics_text(120_000)[: int(120_000 * 0.9)], 300)  # stored whole
    assert ck.config.data.tokenizer == "bpe:300"


def test_a_bpe_run_samples_evaluates_calibrates_and_explores(bpe_run, tmp_path):
    out, _ = bpe_run
    s = cli("sample", "--checkpoint", out, "--prompt", "The class", "--length", 12, "--n", 2, "--steps", 4, "--json")
    assert s.exit_code == 0, s.output
    samples = json.loads(s.stdout)["samples"]
    assert len(samples) == 2 and all(isinstance(x["text"], str) for x in samples)
    e = cli("eval", "--checkpoint", out, "--n", 6, "--steps", 4, "--policies", "confidence,critic", "--json")
    assert e.exit_code == 0, e.output
    rows = json.loads(e.stdout)["rows"]
    assert all(0 <= r["token_acc"] <= 1 and 0 <= r["char_acc"] <= 1 for r in rows)  # both figures
    shown = cli("eval", "--checkpoint", out, "--n", 6, "--steps", 4, "--policies", "confidence")
    assert "token acc" in shown.stdout and "char acc" in shown.stdout
    c = cli("calibrate", "--checkpoint", out, "--n-samples", 6, "--out", tmp_path / "s.jsonl", "--json")
    assert c.exit_code == 0, c.output
    assert json.loads(c.stdout)["tokens"]["n"] > 0  # token-level buckets
    x = cli("explore", "--checkpoint", out, "--no-interactive", "--steps", 2, "--json")
    assert x.exit_code == 0, x.output
    frames = json.loads(x.stdout)["frames"]
    assert "░" in frames[0]["text"]


def test_explore_keeps_its_plain_lines_aligned_under_pieces_of_several_characters(bpe_run):
    out, _ = bpe_run
    x = cli("explore", "--checkpoint", out, "--no-interactive", "--steps", 2)
    assert x.exit_code == 0, x.output
    lines = x.stdout.splitlines()
    triples = [lines[i - 1 : i + 2] for i, line in enumerate(lines) if line.startswith("critic ")]
    assert triples
    for text, critic, marks in triples:  # a piece's digit and mark under its first character, blanks after
        assert text.startswith("text ") and marks.startswith("marks ")
        assert len(text) == len(critic) == len(marks)
        assert all(c.isprintable() for c in text)  # a byte piece never writes a control character


def test_a_bpe_run_resumes_with_its_own_tokenizer(bpe_run, tmp_path):
    import shutil

    out, _ = bpe_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    r = cli("train", "--out", copy, "--resume", "--max-iters", 12, "--json")
    assert r.exit_code == 0, r.output
    assert checkpoint.load(copy).step == 12 and checkpoint.load(copy).vocab == checkpoint.load(out).vocab


def test_tiny_config_still_defaults_to_characters():
    assert tiny_config().data.tokenizer == "char"


def test_value_spans_are_whole_tokens_under_bpe():
    import json as j

    from cdt.grading import value_spans

    c = load_corpus("toolcalls", 256, 400, tokenizer="bpe:300")
    char = load_corpus("toolcalls", 256, 400)
    for r in c.records[:20]:
        ids, spans = value_spans(r, c.vocab)
        assert [c.vocab.decode(ids[a:b]) for a, b in spans] == [j.dumps(v, ensure_ascii=False)
                                                                for v in r.arguments.values()]
        assert c.vocab.decode(ids) == r.prompt + "\n" + r.answer
        ids, _ = value_spans(r, char.vocab)
        assert ids == char.vocab.encode(r.prompt + "\n" + r.answer)  # characters: the row as it always was


def test_a_subword_run_trains_its_critic_on_context_too_and_from_early_on_unless_told(tmp_path):
    from cdt.config import resolve_flags

    def resolved(flags, sets=(), preset=None, config=None):
        return resolve_flags(preset, config, {"data": {"source": "notes.txt"} | flags}, list(sets)).train

    t = resolved({"tokenizer": "bpe:768"})
    assert (t.critic_scope, t.critic_warmup_start, t.critic_warmup_end) == ("masked+context", 500, 700)
    t = resolved({"tokenizer": "bpe:768"}, ["train.max_iters=1000"], preset="small")
    assert (t.critic_warmup_start, t.critic_warmup_end) == (179, 250)  # the same shares of a shorter run
    t = resolved({"tokenizer": "bpe:768"}, ["train.critic_scope=masked"])
    assert (t.critic_scope, t.critic_warmup_start) == ("masked", 500)  # a key the user names stays as named
    (tmp_path / "c.yaml").write_text("train:\n  critic_warmup_start: 1200\n  critic_warmup_end: 1300\n")
    t = resolved({"tokenizer": "bpe:768"}, config=tmp_path / "c.yaml")
    assert (t.critic_scope, t.critic_warmup_start, t.critic_warmup_end) == ("masked+context", 1200, 1300)
    for flags in ({}, {"tokenizer": "char"}, {"source": "functions", "tokenizer": "bpe:768"}):  # as they were
        t = resolved(flags)
        assert (t.critic_scope, t.critic_warmup_start, t.critic_warmup_end) == ("masked", 1750, 1950)


def test_a_text_run_trains_its_critic_on_span_rollouts_unless_told(tmp_path):
    """Text files of characters on cdt's own trunk: half the critic's rows are spans the sampler fills; a key
    the user names stays as named; subwords, the corpora of calls, backbones and resumed runs keep theirs."""
    from cdt.config import resolve, resolve_flags

    def resolved(flags, sets=(), model=None):
        return resolve_flags(None, None, {"data": {"source": "notes.txt"} | flags} | ({"model": model} if model else {}),
                             list(sets)).train

    for flags in ({}, {"tokenizer": "char"}):
        t = resolved(flags)
        assert (t.rollout_share, t.rollout_span) == (0.5, 1.0)
    t = resolved({}, ["train.rollout_share=0"])
    assert (t.rollout_share, t.rollout_span) == (0.0, 1.0)
    (tmp_path / "c.yaml").write_text("train:\n  rollout_span: 0.25\n")
    assert resolve_flags(None, tmp_path / "c.yaml", {"data": {"source": "notes.txt"}}, []).train.rollout_span == 0.25
    for t in (resolved({"source": "toolcalls"}), resolved({"source": "functions"}),
              resolved({"tokenizer": "bpe:768"}), resolved({}, model={"backbone": "hf:/some/bert"})):
        assert (t.rollout_share, t.rollout_span) == (0.0, 0.0)
    old = resolve_flags(None, None, {"data": {"source": "notes.txt"}}, ["train.rollout_share=0"])
    old.train.rollout_span = 0.0
    assert (resolve(base=old).train.rollout_share, resolve(base=old).train.rollout_span) == (0.0, 0.0)
