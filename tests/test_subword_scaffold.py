"""Scaffolds over subword tokens: a slot's language is checked over the characters of its tokens' pieces,
so a slot holds exactly the strings its language accepts however a tokenizer cuts them. Oracles: brute
force over every token sequence, the regular expression of the language, and `jsonschema`."""

import itertools
import json
import re

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdt import checkpoint, scaffold
from cdt.config import ModelConfig
from cdt.data import SEPARATOR, load_corpus
from cdt.errors import CdtError
from cdt.grading import value_spans
from cdt.model import DiffusionLM
from cdt.sampling.loop import generate
from cdt.scaffold.automaton import alt, chars, compile_language, fill, lit, opt, seq, star
from cdt.scaffold.languages import FORMATS, integers
from cdt.settings import SampleConfig
from cdt.vocab import MASK_ID, NULL_ID
from tests.helpers import assert_one_line_error, cli
from tests.test_bfcl_bench import write_bfcl_dir

INTEGER = seq(opt(lit("-")), alt(lit("0"), seq(chars("123456789"), star(chars("0123456789")))))
INTEGER_RE = r"-?(0|[1-9][0-9]*)"


class Pieces:
    """A made-up subword vocabulary: pieces of one and of several characters, some no integer can hold
    ("9-", "a1"), and an empty one (never written in a slot)."""

    PIECES = ("-", "0", "1", "9", "10", "00", "-0", "-1", "19", "9-", "a1", "")

    def slot_pieces(self):
        return (None, None, None) + self.PIECES

    def __len__(self):
        return 3 + len(self.PIECES)

    def text(self, ids) -> str:
        return "".join(self.PIECES[i - 3] for i in ids if i != NULL_ID)


PIECES = Pieces()


def walk(table, ids) -> bool:
    """Whether the slot table accepts the token sequence `ids` (a value, then [NULL]s)."""
    state = 0
    for i in ids:
        state = int(table.next[state, i])
        if state < 0:
            return False
    return bool(table.final[state])


def brute_force(width: int) -> set:
    """Every token sequence of `width` a slot of integers holds, by the regular expression of its text."""
    ids = [NULL_ID] + list(range(3, len(PIECES)))
    out = set()
    for s in itertools.product(ids, repeat=width):
        k = next((j for j, i in enumerate(s) if i == NULL_ID), width)
        ok = all(i == NULL_ID for i in s[k:]) and all(PIECES.PIECES[i - 3] for i in s[:k])
        if ok and re.fullmatch(INTEGER_RE, PIECES.text(s)):
            out.add(s)
    return out


@pytest.mark.parametrize("width", [1, 2, 3])
def test_a_token_slot_accepts_exactly_the_token_sequences_whose_text_the_language_accepts(width):
    table = compile_language(INTEGER, PIECES)
    every = itertools.product([NULL_ID] + list(range(3, len(PIECES))), repeat=width)
    assert {s for s in every if walk(table, s)} == brute_force(width)
    assert table.shortest == 1  # "0" is one token
    assert compile_language(lit("-10"), PIECES).shortest == 2  # "-1" "0" (or "-" "10")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 10**6), st.integers(1, 3))
def test_the_decoder_picks_the_most_probable_token_sequence_the_language_accepts(seed, width):
    table = compile_language(INTEGER, PIECES)
    logp = torch.randn((width, len(PIECES)), generator=torch.Generator().manual_seed(seed)).mul(3).log_softmax(-1)
    logp[:, :2] = float("-inf")
    exact = {s: float(sum(logp[j, t] for j, t in enumerate(s))) for s in brute_force(width)}
    best = max(exact, key=exact.get)
    assert tuple(fill(logp[None], torch.full((1, width), -1), table)[0].tolist()) == best
    u = torch.rand((64, width), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    draws = fill(logp[None].expand(64, -1, -1), torch.full((64, width), -1), table, u)
    assert {tuple(r) for r in draws.tolist()} <= set(exact)  # a draw is always a sequence the slot holds


@pytest.fixture(scope="module")
def bpe():
    pytest.importorskip("tokenizers")
    return load_corpus("functions", 768, 600, tokenizer="bpe:500").vocab


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.none(), st.integers(-3000, 3000)), st.one_of(st.none(), st.integers(-3000, 3000)),
       st.from_regex(r"-?[0-9]{1,5}|[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{2}:[0-9]{2}", fullmatch=True))
def test_bpe_and_character_cuts_of_a_text_are_accepted_alike_and_as_the_language_says(bpe, lo, hi, text):
    """However the text is cut (the BPE's own tokens, or one character per token), the slot holds it
    exactly when the language does: integers in a range, dates, times."""
    cases = [(integers(lo, hi), re.fullmatch(INTEGER_RE, text) and text != "-0" and (lo is None or int(text) >= lo)
              and (hi is None or int(text) <= hi)),
             (FORMATS["date"], re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", text)),
             (FORMATS["time"], re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", text))]
    for expr, expected in cases:
        table = compile_language(expr, bpe)
        by_char = [bpe.encode(c)[0] for c in text]  # ASCII: one byte-level token each
        assert walk(table, bpe.encode(text)) == walk(table, by_char) == bool(expected)


def test_the_bpe_scaffold_trains_on_the_layout_it_generates_into(bpe):
    """A training row's structure is token for token the generation template's; each slot holds its
    value's own tokens then [NULL]; the call decodes to the record's answer."""
    records = load_corpus("functions", 768, 600, scaffold=True, tokenizer="bpe:500").records
    for r in records[:40]:
        schema = scaffold.layout.record_schema(r)
        ids, slots = scaffold.record_row(r, bpe)
        head = len(bpe.encode(r.prompt + SEPARATOR))
        assert scaffold.parse(schema, bpe.decode(ids[head:])).call == json.loads(r.answer)
        template, masked = scaffold.render(schema, bpe)
        assert masked == slots[head:] and len(template) == len(ids) - head
        assert [t for t, m in zip(template, masked) if not m] == [t for t, m in zip(ids[head:], slots[head:]) if not m]
        for a, b in value_spans(r, bpe, scaffold=True)[1]:  # a value encoded on its own, whole tokens
            value = bpe.encode(bpe.decode(ids[a:b]))
            assert ids[a:b] == value + [NULL_ID] * (b - a - len(value))


TOOLS = [{"name": "book_table", "parameters": {"type": "dict", "properties": {
    "restaurant": {"type": "string"}, "people": {"type": "integer", "minimum": 1, "maximum": 12},
    "outdoor": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
    "diet": {"type": "array", "items": {"enum": ["vegan", "halal", "none"]}, "maxItems": 2},
    "where": {"type": "dict", "properties": {"lat": {"type": "float"}, "lon": {"type": "float"}}},
    "budget": {"type": ["number", "null"]}, "extra": {"type": "any"}, "note": {"type": "string"}},
    "required": ["restaurant", "people", "outdoor", "date"]}},
    {"name": "ping", "parameters": {"type": "object", "properties": {
        "host": {"type": "string", "maxLength": 6}, "n": {"type": "integer", "minimum": -5},
        "when": {"type": "string", "format": "time"}, "tags": {"enum": [1, "one", None, True, 2.5]}},
        "required": ["host"]}}]


@pytest.mark.parametrize("policy, temperature, commit", [("confidence", 0.0, "remask"), ("critic", 1.5, "lock"),
                                                         ("random", 1.5, "threshold")])
def test_an_untrained_bpe_model_fills_every_slot_with_a_valid_value(bpe, tmp_path, policy, temperature, commit):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(TOOLS))
    torch.manual_seed(0)
    model = DiffusionLM(ModelConfig(vocab_size=len(bpe), d_model=32, n_layers=1, n_heads=2, block_size=1024)).eval()
    prompt = "Book a table for two tomorrow"
    start = len(bpe.encode(prompt + SEPARATOR))
    cfg = SampleConfig(steps=4, policy=policy, temperature=temperature, commit=commit, seed=3)
    for t in scaffold.load(None, path):
        ids, protected = scaffold.template(t, bpe, [prompt] * 3, SEPARATOR, 1024)
        gen = generate(model, ids, protected, cfg, allow_null=True,
                       constraint=scaffold.SlotConstraint.of([(t, start)] * 3, bpe))
        assert torch.equal(gen.tokens[protected], ids[protected])
        assert not (gen.tokens == MASK_ID).any()
        for row in gen.tokens:
            parsed = scaffold.parse(t, bpe.decode(row[start:]))
            assert parsed.valid, parsed.errors
            jsonschema.validate(parsed.call, scaffold.json_schema(t))


def test_a_tokenizer_that_does_not_write_json_back_is_refused_for_scaffolds(tmp_path):
    pytest.importorskip("tokenizers")
    from tests.test_tokenizer import _wordpiece_file

    from cdt import tokenizer

    _wordpiece_file(tmp_path)
    wordpiece = tokenizer.load_file(tmp_path)  # its decoder writes spaces between words
    with pytest.raises(CdtError, match="pieces joined"):
        compile_language(INTEGER, wordpiece)
    result = cli("train", "--preset", "tiny", "--data", "functions", "--scaffold", "--tokenizer", tmp_path,
                 "--max-iters", 1, "--out", tmp_path / "run")
    assert_one_line_error(result, 1, "pieces joined", "bpe:SIZE")


@pytest.fixture(scope="module")
def bpe_functions_run(tmp_path_factory):
    pytest.importorskip("tokenizers")
    out = tmp_path_factory.mktemp("bpe_functions") / "run"
    result = cli("train", "--preset", "tiny", "--data", "functions", "--scaffold", "--tokenizer", "bpe:400",
                 "--max-iters", 12, "--set", "data.n_records=1200", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_cli_bpe_scaffold_run_samples_evaluates_and_benches_valid_calls(bpe_functions_run, tmp_path):
    one = cli("sample", "--checkpoint", bpe_functions_run, "--schema", "get_weather", "--prompt",
              "Weather in Zürich, in celsius", "--steps", 3, "--temperature", 1.0, "--json")
    assert one.exit_code == 0, one.output
    assert all(s["valid"] for s in json.loads(one.stdout)["samples"])
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    two = cli("sample", "--checkpoint", bpe_functions_run, "--schema-file", tools, "--prompt", "Ping the host",
              "--steps", 3, "--json")  # several tools: the name slot first, in tokens
    assert two.exit_code == 0, two.output
    sample = json.loads(two.stdout)["samples"][0]
    assert sample["valid"] and sample["call"]["name"] in ("book_table", "ping")
    ev = cli("eval", "--checkpoint", bpe_functions_run, "--scaffold", "--n", 8, "--steps", 3, "--policies",
             "confidence,critic", "--json")
    assert ev.exit_code == 0, ev.output
    assert all(r["json_valid"] == r["schema_valid"] == r["structure"] == 1.0 for r in json.loads(ev.stdout)["rows"])
    bench = cli("bench", "bfcl", "--checkpoint", bpe_functions_run, "--data", write_bfcl_dir(tmp_path), "--steps", 3, "--json")
    assert bench.exit_code == 0, bench.output
    for c in json.loads(bench.stdout)["categories"]:  # BFCL's own functions, Zürich included
        assert c["parse_rate"] == c["valid_rate"] == 1.0 and c["n"] > 0


def test_explore_keeps_a_scaffolded_rows_slots_in_their_languages(bpe_functions_run):
    """explore fills held-out slots under the same constraint as sample --schema and eval --scaffold."""
    from cdt.scaffold.layout import record_schema
    from cdt.sampling.heldout import load_heldout

    records = load_heldout(checkpoint.load(bpe_functions_run), 2).records
    for index, record in enumerate(records):
        x = cli("explore", "--checkpoint", bpe_functions_run, "--no-interactive", "--steps", 3, "--index", index,
                "--temperature", 1.5, "--json")
        assert x.exit_code == 0, x.output
        for frame in json.loads(x.stdout)["frames"][1:]:  # after every step, not only the last
            parsed = scaffold.parse(record_schema(record), frame["text"].split(SEPARATOR, 1)[1])
            assert parsed.valid, (frame["text"], parsed.errors)


def test_cli_bpe_scaffold_errors_are_one_line(bpe_functions_run):
    base = ["sample", "--checkpoint", bpe_functions_run, "--steps", 2, "--schema", "get_weather"]
    assert_one_line_error(cli(*base, "--budget", "unit=1", "--prompt", "x"), 2, "too small")
    assert_one_line_error(cli(*base, "--prompt", "x" * 3000), 2, "positions")
