"""The embedded `functions` corpus: generated functions of every type, requests whose values are copied or
transformed, validation on functions never seen in training, a trained fallback for unknown characters,
and nothing of BFCL in it."""

import importlib.util
import json
from collections import Counter

import jsonschema
import numpy as np
import pytest

from cdt.config import FUNCTIONS_BLOCK_SIZE
from cdt.data import RECORD_CORPORA, SEPARATOR, functions, load_corpus
from cdt.data.toolcalls import check_answer
from cdt.scaffold.layout import record_row, slot_fields
from cdt.scaffold.validate import json_schema, parse
from cdt.vocab import FALLBACK

RECORDS = functions.generate(3000, seed=4)
VOCAB = RECORD_CORPORA["functions"][2]


def test_deterministic_by_seed():
    assert functions.generate(100, 7) == functions.generate(100, 7)
    assert functions.generate(100, 7) != functions.generate(100, 8)


def test_every_call_validates_against_its_own_schema():
    """Every answer is a valid call of its function: the reference validator checks 600 (compiling a schema
    per record is what takes the time), cdt's own field-by-field check all of them."""
    for r in RECORDS[:600]:
        jsonschema.validate(json.loads(r.answer), json_schema(r.schema))
    assert all(check_answer(r, r.answer).exact for r in RECORDS)


def test_types_arguments_and_names_cover_the_field():
    fields = [f for r in RECORDS for f in r.schema.fields]
    types = Counter(f.type for f in fields)
    assert {"string", "integer", "number", "boolean", "enum", "array", "object"} <= set(types)
    assert min(types.values()) > 100
    assert any(f.optional for f in fields) and any(not f.optional for f in fields)
    tools = {r.tool for r in RECORDS}
    assert len(tools) > 1000  # many functions, few requests each: the model cannot memorise them
    assert any("." in t for t in tools) and any("_" in t and "." not in t for t in tools)
    assert any(t != t.lower() for t in tools)  # camelCase too
    assert len({r.prompt for r in RECORDS}) == len(RECORDS)


def test_copied_strings_occur_in_the_request_and_transforms_happen():
    for r in RECORDS:
        for f in r.schema.fields:
            v = r.arguments[f.name]
            if f.type == "string" and v is not None:
                assert v in r.prompt, (r.prompt, f.name, v)
            if f.type == "array" and v and isinstance(v[0], str):
                assert all(x in r.prompt for x in v)
    said = " ".join(r.prompt for r in RECORDS)
    assert "percent" in said and " and " in said  # 25 percent -> 0.25, spoken lists -> arrays
    words = [r for r in RECORDS if any(f.type == "integer" and r.arguments[f.name] is not None
                                       and str(r.arguments[f.name]) not in r.prompt for f in r.schema.fields)]
    assert len(words) > 30  # integers said as words ("forty-two" -> 42)
    nulls = [r for r in RECORDS if any(v is None for v in r.arguments.values())]
    assert len(nulls) > 100  # optional arguments the request leaves out are null


def test_validation_functions_are_never_seen_in_training():
    corpus = load_corpus("functions", 640, 4000, seed=2)
    train = functions.generate(4000, 2)
    val_tools = {r.tool for r in corpus.records}
    train_tools = {r.tool for r in train if not functions.is_validation(r.tool)}
    assert val_tools and not val_tools & train_tools
    core = lambda t: "".join(c for c in t.rsplit(".", 1)[-1].lower() if c.isalpha())  # noqa: E731
    assert not {core(t) for t in val_tools} & {core(t) for t in train_tools}  # other spellings too
    assert 0.05 < len(corpus.val) / (len(corpus.val) + len(corpus.train)) < 0.2


def test_unknown_characters_read_as_the_trained_fallback():
    assert VOCAB.fallback is not None and VOCAB.unknown("Zürich") == ["ü"]
    ids = VOCAB.encode("Zürich")
    assert ids[1] == VOCAB.fallback and VOCAB.decode(ids) == "Z" + FALLBACK + "rich"
    assert np.array_equal(VOCAB.encode_array("Zürich"), ids)
    foreign = [r for r in RECORDS if VOCAB.unknown(r.prompt)]
    assert len(foreign) > 30  # the model is trained to copy the fallback into a value
    r = foreign[0]
    ids, slots = record_row(r, VOCAB)
    assert VOCAB.fallback in [i for i, s in zip(ids, slots) if s]


def test_scaffolded_rows_hold_every_call_and_fit_the_block():
    corpus = load_corpus("functions", FUNCTIONS_BLOCK_SIZE, 2000, seed=1, scaffold=True)
    assert corpus.info["longest_row"] <= FUNCTIONS_BLOCK_SIZE
    for r in corpus.records[:300]:
        ids, slots = record_row(r, VOCAB)
        text = VOCAB.decode(ids).split(SEPARATOR, 1)[1]
        parsed = parse(r.schema, text)
        if not VOCAB.unknown(r.prompt):
            assert parsed.valid and parsed.call == json.loads(r.answer), (text, parsed.errors)
        assert sum(slots) == sum(f.slot for f in slot_fields(r.schema))


needs_bfcl = pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None,
                                reason="bfcl-eval is not installed (pip install --no-deps bfcl-eval)")


def json_or_empty(line: str) -> dict:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError:  # BFCL_v4_format_sensitivity.json is not JSON lines
        return {}
    return doc if isinstance(doc, dict) else {}


@needs_bfcl
def test_no_bfcl_request_function_or_answer_in_the_corpus():
    from cdt.bfcl import data

    folder = data.data_dir()
    items = [i for c in data.CATEGORIES for i in data.load(folder, c)]
    names = {f["name"] for p in folder.glob("BFCL_v*.json") for line in p.read_text().splitlines()
             for f in json_or_empty(line).get("function") or [] if isinstance(f, dict)}  # every category's
    assert len(names) > 1000
    requests = {i.request for i in items}
    records = functions.generate(40000, 0)  # the default corpus
    assert not {r.tool for r in records} & names
    assert not {r.prompt for r in records} & requests
    calls = {json.dumps(i.expected, sort_keys=True) for i in items}
    assert not {json.dumps({r.tool: r.arguments}, sort_keys=True) for r in records} & calls


def test_training_teaches_the_choice_of_tool_in_the_layout_sampling_uses():
    """Records offered several tools name them after the request, and add a training row that ends after the
    tool-name slot: the first pass `sample` and `bench` take, position for position."""
    from cdt.scaffold.layout import name_offset, name_row, record_rows
    from cdt.scaffold.schema import Field
    from cdt.vocab import MASK_ID, NULL_ID

    offered = [r for r in RECORDS if r.offered]
    assert 0.2 < len(offered) / len(RECORDS) < 0.4
    r = offered[0]
    assert r.tool in r.offered and r.prompt.endswith(f"(tools: {', '.join(r.offered)})")
    assert {functions.is_validation(t) for t in r.offered} == {functions.is_validation(r.tool)}  # one split
    rows = record_rows(RECORDS[:200], VOCAB, 720, names=True)
    assert len(rows.ids) == 200 + sum(1 for x in RECORDS[:200] if x.offered)
    name = Field("name", "enum", r.offered)
    taught, slot = name_row(r.prompt, name, SEPARATOR, VOCAB, r.tool)
    asked, asked_slot = name_row(r.prompt, name, SEPARATOR, VOCAB)
    assert slot == asked_slot and sum(slot) == max(map(len, r.offered))
    start = len(VOCAB.encode(r.prompt + SEPARATOR)) + name_offset(VOCAB)
    assert VOCAB.decode(taught[start : start + name.slot]) == r.tool
    assert taught[start + len(r.tool) : start + name.slot] == [NULL_ID] * (name.slot - len(r.tool))
    assert asked[start : start + name.slot] == [MASK_ID] * name.slot
    assert [t for t, s in zip(taught, slot) if not s] == [t for t, s in zip(asked, slot) if not s]


def test_requests_speak_as_people_do_and_stay_unambiguous():
    """Compound argument names said whole or by their base; values said without a name only where that is
    unambiguous: two arguments of one type named by neither are said in the function's order; money."""
    import random

    from cdt.data.functions import KINDS, _request

    fields = [f.name for r in RECORDS for f in r.schema.fields]
    assert sum("_" in f for f in fields) > 0.2 * len(fields)  # start_location, player_name
    base_alone = [r for r in RECORDS for f in r.schema.fields if r.arguments[f.name] is not None
                  and f.name.split("_", 1)[0] in functions.QUALIFIERS and f.name.count("_") == 1
                  and f.name.replace("_", " ") not in r.prompt and f" {f.name.split('_')[1]} " in r.prompt]
    assert len(base_alone) > 30  # "location" for start_location
    count = next(k for k in KINDS if "count" in k.names)
    args = [(count, "width", False, (), "width"), (count, "height", False, (), "height")]
    unnamed = 0
    for seed in range(600):
        prompt, values = _request(random.Random(seed), "measure the frame", args)
        said = [str(values[a]) for a in ("width", "height")]
        if "width" in prompt or "height" in prompt or not all(s in prompt for s in said) or said[0] == said[1]:
            continue  # named, said as words, or the same value twice: nothing to order
        unnamed += 1
        assert prompt.index(said[0]) < prompt.index(said[1]) or said[0] in said[1], prompt
    assert unnamed > 20
    for seed in range(200):  # offered a tool on the same subject, a request says what to do with it
        assert "measure the frame" in _request(random.Random(seed), "measure the frame", args, say_verb=True)[0].lower()
    money = [r for r in RECORDS for f in r.schema.fields if f.type in ("integer", "number") and r.arguments[f.name]
             and (f"${r.arguments[f.name]:,}" in r.prompt or f"${r.arguments[f.name]}" in r.prompt)]
    assert len(money) > 30  # $2,000,000 -> 2000000
