"""Typed scaffolds: any function definition in, a call that always parses and validates out, whatever the
model (here an untrained one), the temperature or the policy. The oracle is the `jsonschema` library."""

import itertools
import json
import math
import re

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdt import scaffold
from cdt.config import ModelConfig
from cdt.data import SEPARATOR, load_corpus
from cdt.model import DiffusionLM
from cdt.sampling.loop import generate
from cdt.scaffold.automaton import alt, chars, compile_language, fill, lit, opt, seq, star
from cdt.settings import POLICY_NAMES, SampleConfig
from cdt.vocab import NULL_ID, Vocab
from tests.helpers import cli

VOCAB = load_corpus("toolcalls", 256, 300, 0).vocab
PROMPT = "Book it please"
START = len(VOCAB.encode(PROMPT + SEPARATOR))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=len(VOCAB), d_model=32, n_layers=1, n_heads=2, block_size=1024)).eval()


# the decoder, against brute force

DIGITS = Vocab(tuple("-0123456789"))
INTEGER = seq(opt(lit("-")), alt(lit("0"), seq(chars("123456789"), star(chars("0123456789")))))


def brute_force(logp: torch.Tensor) -> dict:
    """{token sequence: log-probability} of every sequence an integer slot accepts (a value, then [NULL]s)."""
    ids = [NULL_ID] + [DIGITS.id_of(c) for c in DIGITS.chars]
    out = {}
    for seq_ in itertools.product(ids, repeat=logp.shape[0]):
        text = "".join(DIGITS.chars[i - 3] for i in seq_ if i != NULL_ID)
        k = len(text)
        if all(i != NULL_ID for i in seq_[:k]) and re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
            out[seq_] = float(sum(logp[j, t] for j, t in enumerate(seq_)))
    return out


def test_the_decoder_picks_the_most_probable_valid_value_by_hand():
    table = compile_language(INTEGER, DIGITS)
    logp = torch.full((4, len(DIGITS)), -10.0)
    for i, c in enumerate("0224"):  # the unconstrained argmax: a leading zero, not JSON
        logp[i, DIGITS.id_of(c)] = -0.1
    logp[0, DIGITS.id_of("1")] = -1.0
    logp[:, NULL_ID] = -5.0
    got = fill(logp[None], torch.full((1, 4), -1), table)[0].tolist()
    # "1224" costs -1.0 - 0.3 = -1.3; "0" and three [NULL] -0.1 - 15; "224" + [NULL] -10.2 - 5: 1224 wins
    assert DIGITS.decode(got) == "1224"
    fixed = torch.tensor([[DIGITS.id_of("0"), -1, -1, -1]])  # a committed leading zero: only "0" can follow
    assert fill(logp[None], fixed, table)[0].tolist() == [DIGITS.id_of("0")] + [NULL_ID] * 3


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(0, 10**6), st.integers(1, 3))
def test_the_decoder_equals_brute_force_and_samples_the_constrained_distribution(seed, width):
    table = compile_language(INTEGER, DIGITS)
    logp = torch.randn((width, len(DIGITS)), generator=torch.Generator().manual_seed(seed)).mul(3).log_softmax(-1)
    logp[:, :2] = float("-inf")  # [MASK] and [PAD] are never written
    exact = brute_force(logp)
    best = max(exact, key=exact.get)
    assert tuple(fill(logp[None], torch.full((1, width), -1), table)[0].tolist()) == best
    if width <= 2:  # sampling: frequencies against the exact constrained distribution
        n = 4000
        u = torch.rand((n, width), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        draws = fill(logp[None].expand(n, -1, -1), torch.full((n, width), -1), table, u)
        z = math.log(sum(math.exp(v) for v in exact.values()))
        counts = {}
        for row in draws.tolist():
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
        assert set(counts) <= set(exact)
        for s, lp in exact.items():
            p = math.exp(lp - z)
            assert abs(counts.get(s, 0) / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 2e-3


NUMBERS = Vocab(tuple("-.0123456789"))


def accepts(expr, text: str) -> bool:
    table = compile_language(expr, NUMBERS)
    state = 0
    for c in text:
        state = int(table.next[state, NUMBERS.id_of(c)])
        if state < 0:
            return False
    return bool(table.final[state])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.one_of(st.none(), st.integers(-3000, 3000)), st.one_of(st.none(), st.integers(-3000, 3000)),
       st.integers(-5000, 5000))
def test_an_integer_range_language_holds_exactly_the_integers_in_the_range(lo, hi, x):
    from cdt.scaffold.languages import integers

    inside = (lo is None or x >= lo) and (hi is None or x <= hi)
    assert accepts(integers(lo, hi), str(x)) == inside
    assert not any(accepts(integers(lo, hi), bad) for bad in ("", "-", "-0", "01", "1.0"))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.one_of(st.none(), st.floats(-500, 500)), st.one_of(st.none(), st.floats(-500, 500)),
       st.from_regex(r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?", fullmatch=True))
def test_a_number_range_language_never_holds_a_number_outside_the_range(lo, hi, text):
    from cdt.scaffold.languages import _number

    if accepts(_number(lo, hi), text):
        assert (lo is None or float(text) >= lo) and (hi is None or float(text) <= hi)


# a generated family of schemas, filled by an untrained model

SCALARS = st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"},
                           {"type": "string", "maxLength": 5}, {"type": "integer", "minimum": 0, "maximum": 30},
                           {"type": "number", "minimum": 0}, {"type": "string", "format": "date"},
                           {"type": "number", "minimum": -90, "maximum": 90}, {"type": "integer", "minimum": -5},
                           {"type": "integer", "maximum": 1000, "minimum": 3}, {"type": "number", "maximum": -0.5},
                           {"type": "string", "format": "time"}, {"type": "float"}, {"type": "any"},
                           {"enum": ["a", "b c", "d\"e"]}, {"enum": [1, "one", None, True, 2.5]},
                           {"type": ["string", "null"]}])


def values(depth: int):
    if depth == 0:
        return SCALARS
    inner = values(depth - 1)
    return st.one_of(
        SCALARS,
        st.builds(lambda item, most: {"type": "array", "items": item} | ({"maxItems": most} if most else {}),
                  inner, st.sampled_from([None, 1, 2])),
        st.builds(lambda props, req: {"type": "object", "properties": props, "required": [k for k in props if req]},
                  st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, min_size=1, max_size=2), st.booleans()))


def tool(name: str):
    return st.builds(lambda props, required: {"name": name, "parameters": {
        "type": "object", "properties": props, "required": [k for k, r in zip(props, required) if r]}},
        st.dictionaries(st.sampled_from(["city", "n", "when", "tags", "opt"]), values(2), min_size=1, max_size=3),
        st.lists(st.booleans(), min_size=3, max_size=3))


def check_every_call(model, tools, cfg: SampleConfig, rows: int = 2):
    """Generate `rows` calls of each tool and validate every one against its schema with jsonschema."""
    for t in tools:
        ids, protected = scaffold.template(t, VOCAB, [PROMPT] * rows, SEPARATOR, 1024)
        constraint = scaffold.SlotConstraint.of([(t, START)] * rows, VOCAB)
        gen = generate(model, ids, protected, cfg, allow_null=True, constraint=constraint)
        assert torch.equal(gen.tokens[protected], ids[protected])  # the structure is untouched
        for row in gen.tokens:
            text = VOCAB.decode(row[START:])
            parsed = scaffold.parse(t, text)
            assert parsed.valid, (text, parsed.errors)
            jsonschema.validate(parsed.call, scaffold.json_schema(t))


CALLS = (st.lists(st.one_of(tool("book"), tool("ping")), min_size=1, max_size=2, unique_by=lambda t: t["name"]),
         st.sampled_from(POLICY_NAMES), st.sampled_from([0.0, 1.5]), st.sampled_from(["remask", "lock", "threshold"]))


def any_schema_gives_valid_calls(model, tmp_path_factory, tools, policy, temperature, commit):
    path = tmp_path_factory.mktemp("schema") / "tools.json"
    path.write_text(json.dumps([{"type": "function", "function": t} for t in tools]))
    loaded = scaffold.load(None, path)
    check_every_call(model, loaded, SampleConfig(steps=4, policy=policy, temperature=temperature, commit=commit,
                                                 seed=len(tools)))


def property_test(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))(given(*CALLS)(any_schema_gives_valid_calls))


test_any_schema_any_policy_any_temperature_gives_valid_calls = property_test(25)
test_many_more_schemas_give_valid_calls = pytest.mark.slow(property_test(300))


RICH = {"name": "book_table", "parameters": {"type": "dict", "properties": {
    "restaurant": {"type": "string"}, "people": {"type": "integer", "minimum": 1, "maximum": 12},
    "outdoor": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
    "diet": {"type": "array", "items": {"enum": ["vegan", "halal", "none"]}, "maxItems": 2},
    "where": {"type": "dict", "properties": {"lat": {"type": "float"}, "lon": {"type": "float"}}},
    "budget": {"type": ["number", "null"]}, "extra": {"type": "any"}, "note": {"type": "string"}},
    "required": ["restaurant", "people", "outdoor", "date"]}}


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_at_both_temperatures_fills_a_rich_schema_validly(model, tmp_path, policy):
    path = tmp_path / "bfcl.json"
    path.write_text(json.dumps([RICH]))
    for temperature in (0.0, 1.5):
        check_every_call(model, scaffold.load(None, path), SampleConfig(steps=6, policy=policy, temperature=temperature),
                         rows=3)


# the input formats


@pytest.mark.parametrize("doc", [
    {"type": "object", "title": "book_table", "properties": {"n": {"type": "integer"}}},
    {"type": "object", "name": "book_table", "properties": {"n": {"type": "integer"}}},
    {"type": "function", "function": {"name": "book_table", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer"}}}}},
    [{"type": "function", "function": {"name": "book_table", "parameters": {"type": "object", "properties": {
        "n": {"type": "integer"}}}}}],
    {"name": "book_table", "description": "BFCL", "parameters": {"type": "dict", "properties": {
        "n": {"type": "integer"}}, "required": ["n"]}},
])
def test_every_tool_format_names_the_tool_from_the_schema(tmp_path, doc):
    path = tmp_path / "schema.json"  # not the tool's name: the name comes from the schema
    path.write_text(json.dumps(doc))
    (tool_,) = scaffold.load(None, path)
    assert tool_.tool == "book_table" and tool_.fields[0].type == "integer"


def test_bfcl_types_map_onto_json_types(tmp_path):
    path = tmp_path / "bfcl.json"
    path.write_text(json.dumps(RICH))
    (t,) = scaffold.load(None, path)
    kinds = {f.name: f.type for f in t.fields}
    assert kinds == {"restaurant": "string", "people": "integer", "outdoor": "boolean", "date": "string",
                     "diet": "array", "where": "object", "budget": "number", "extra": "any", "note": "string"}
    assert t.field("budget").optional and t.field("where").fields[0].type == "number"


def test_a_constraint_a_slot_cannot_express_is_named_once(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "t", "type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]+$"}, "mail": {"type": "string", "format": "email"}}}))
    notes = []
    scaffold.load(None, path, notes=notes)
    assert notes == ["%s (t) property 'code': pattern ignored (a slot cannot express it)" % path,
                     "%s (t) property 'mail': format 'email' ignored (a slot expresses date, time, date-time)" % path]


def test_cli_several_tools_choose_a_name_and_follow_its_schema(tiny_run, tmp_path):
    path = tmp_path / "tools.json"
    small = {"name": "book_table", "parameters": {"type": "dict", "properties": {
        "people": {"type": "integer", "minimum": 1, "maximum": 12}, "outdoor": {"type": "boolean"},
        "diet": {"type": "array", "items": {"enum": ["vegan", "none"]}, "maxItems": 2}}}}
    path.write_text(json.dumps([small, {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}}}}]))
    result = cli("sample", "--checkpoint", tiny_run, "--schema-file", path, "--prompts-file", "-", "--steps", "4",
                 "--temperature", "1.5", input="dinner for two\nwhat time is it\nbook a table\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(ln) for ln in result.stdout.splitlines()]
    tools = {t.tool: t for t in scaffold.load(None, path)}
    assert len(lines) == 3
    for line in lines:
        assert line["valid"] and line["call"]["name"] in tools
        jsonschema.validate(line["call"], scaffold.json_schema(tools[line["call"]["name"]]))


def test_cli_refuses_a_slot_too_small_for_its_shortest_value(tiny_run, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"name": "t", "type": "object", "properties": {
        "when": {"type": "string", "format": "date"}}}))
    result = cli("sample", "--checkpoint", tiny_run, "--schema-file", path, "--budget", "when=4")
    assert result.exit_code == 2 and "needs 10; raise it with --budget when=10" in result.stderr
