"""Schema scaffolds: layout, [NULL] handling, validation, training rows, sampling and eval."""

import json
import re

import pytest
import torch

from cdt import scaffold
from cdt.data import SEPARATOR, load_corpus
from cdt.data.toolcalls import TOOLS, generate as generate_records
from cdt.errors import CdtError, UsageError
from cdt.model import DiffusionLM
from cdt.config import ModelConfig
from cdt.sampling.loop import generate
from cdt.settings import SampleConfig
from cdt.vocab import MASK_ID, NULL_ID

from tests.helpers import assert_one_line_error, cli


@pytest.fixture(scope="module")
def vocab():
    return load_corpus("toolcalls", 256, 300, 0).vocab


def random_model(vocab):
    torch.manual_seed(0)
    return DiffusionLM(ModelConfig(vocab_size=len(vocab), d_model=32, n_layers=1, n_heads=2, block_size=400))


@pytest.mark.parametrize("tool", list(TOOLS))
def test_generation_changes_only_the_slots_of_every_builtin_tool(tool, vocab):
    schema = scaffold.builtin(tool)
    ids, protected = scaffold.template(schema, vocab, ["Please do it", "Another, longer request here"], SEPARATOR, 400)
    gen = generate(random_model(vocab), ids, protected, SampleConfig(steps=3, seed=1), allow_null=True)
    assert torch.equal(gen.tokens[protected], ids[protected])  # structure and prompt untouched
    assert not (gen.tokens == MASK_ID).any()
    body, slots = scaffold.render(schema, vocab)
    assert sum(slots) == sum(f.slot for f in schema.fields)
    text = vocab.decode(gen.tokens[0, len(vocab.encode("Please do it\n")):])
    assert text.startswith('{"name": "' + tool + '", "arguments": {') and text.endswith("}}")
    assert "[NULL]" not in text and chr(0) not in text


def test_rendered_values_round_trip_and_null_is_stripped(vocab):
    for record in generate_records(400, 3):
        ids, slots = scaffold.render(scaffold.builtin(record.tool), vocab, record.arguments)
        assert NULL_ID in ids  # slots are padded
        schema = scaffold.builtin(record.tool)
        assert scaffold.parse(schema, vocab.decode(ids)).call == json.loads(record.answer)
        assert all(s for i, s in zip(ids, slots) if i == NULL_ID)  # [NULL] only inside slots


def test_optional_argument_can_be_null(vocab):
    schema = scaffold.builtin("set_alarm")
    ids, slots = scaffold.render(schema, vocab, {"time": "07:00", "label": None})
    assert vocab.decode(ids) == '{"name": "set_alarm", "arguments": {"time": "07:00", "label": ""}}'
    assert ids[-schema.field("label").slot - 3 : -3] == [NULL_ID] * schema.field("label").slot  # an empty slot
    parsed = scaffold.parse(schema, vocab.decode(ids))
    assert parsed.valid and parsed.call["arguments"]["label"] is None  # reads as null


def test_validation_catches_wrong_types_and_enums():
    schema = scaffold.builtin("get_weather")
    wrong_enum = scaffold.parse(schema, '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin", "day": "today"}}')
    assert not wrong_enum.valid and wrong_enum.errors == [
        "field 'unit': generated \"kelvin\", expected one of celsius, fahrenheit"]
    meeting = scaffold.builtin("schedule_meeting")
    wrong_type = scaffold.parse(meeting, '{"name": "schedule_meeting", "arguments": {"title": "x", "date": "2028-01-01", '
                                         '"minutes": "thirty", "online": 1}}')
    assert [e.split(":")[0] for e in wrong_type.errors] == ["field 'minutes'", "field 'online'"]
    broken = scaffold.parse(schema, '{"name": "get_weather", "arguments": {"city": "Os"lo"}}')
    assert broken.call is None and "not valid JSON" in broken.errors[0]
    missing_null = scaffold.parse(schema, '{"name": "get_weather", "arguments": {"city": null, "unit": "celsius", "day": "today"}}')
    assert missing_null.errors == ["field 'city': generated null, expected a string"]


def test_user_schema_file(tmp_path, vocab):
    f = tmp_path / "order_pizza.json"
    f.write_text(json.dumps({"type": "object", "title": "order_pizza", "properties": {
        "size": {"enum": ["small", "large"]}, "slices": {"type": "integer"}, "note": {"type": "string", "maxLength": 8},
        "vegan": {"type": "boolean"}}, "required": ["size", "slices", "vegan"]}))
    schema = scaffold.from_json_schema(f)
    assert schema.tool == "order_pizza" and [x.optional for x in schema.fields] == [False, False, True, False]
    assert schema.field("note").slot == 8 and schema.field("note").quoted_by_scaffold
    ids, protected = scaffold.template(schema, vocab, ["two large slices"], SEPARATOR, 400)
    gen = generate(random_model(vocab), ids, protected, SampleConfig(steps=2), allow_null=True)
    assert torch.equal(gen.tokens[protected], ids[protected])
    good = '{"name": "order_pizza", "arguments": {"size": "large", "slices": 2, "note": null, "vegan": false}}'
    assert scaffold.parse(schema, good).valid


@pytest.mark.parametrize("content, fragment", [
    ("{oops", "not valid JSON"),
    ('{"type": "array", "name": "t"}', "must be an object schema"),
    ('{"type": "object", "name": "t", "properties": {"x": {"type": "date"}}}', "has type 'date'"),
    ('{"type": "object", "name": "t", "properties": {"x": {"enum": []}}}', "non-empty enum"),
    ('{"type": "object", "properties": {"x": {"type": "string"}}}', 'has no tool name: give the schema a "name"'),
    ('{"name": "t", "type": "object", "properties": {"x": {"$ref": "#"}}}', "property 'x' uses $ref"),
    ('{"name": "t", "type": "object", "properties": {"x": {"oneOf": [{"type": "string"}]}}}', "uses oneOf"),
    ('{"name": "t", "type": "object", "properties": {"x": {"type": "integer", "minimum": 5, "maximum": 1}}}',
     "minimum 5 is above its maximum 1"),
    ('[{"name": "t", "parameters": {"type": "object"}}, {"name": "t", "parameters": {"type": "object"}}]',
     "names a tool twice: t"),
    ('[]', "an empty list of tools"),
])
def test_bad_schema_files(tmp_path, content, fragment):
    f = tmp_path / "s.json"
    f.write_text(content)
    with pytest.raises(UsageError if "JSON" not in fragment else CdtError, match=re.escape(fragment)):
        scaffold.load(None, f)


def test_budgets():
    schema = scaffold.builtin("get_weather")
    assert scaffold.with_budgets(schema, {"city": 30}).field("city").slot == 30
    assert scaffold.with_budgets(schema, {}).fields == schema.fields
    with pytest.raises(UsageError, match="too small for its enum value 'fahrenheit'"):
        scaffold.with_budgets(schema, {"unit": 4})
    with pytest.raises(UsageError, match="unknown fields: colour"):
        scaffold.load("get_weather", None, ["colour=4"])
    with pytest.raises(UsageError, match="built-in tools: get_weather"):
        scaffold.builtin("get_wether")


def test_scaffold_training_rows_mask_only_slots():
    corpus = load_corpus("toolcalls", 288, 300, 0, scaffold=True)
    rows = corpus.val
    ids, maskable = rows.ids, rows.maskable
    assert (ids[maskable] != 1).all()  # never [PAD]
    assert (ids == NULL_ID).sum() > 0 and not (~maskable & (ids == NULL_ID)).any()
    with pytest.raises(CdtError, match="raise model.block_size"):
        load_corpus("toolcalls", 150, 300, 0, scaffold=True)


@pytest.fixture(scope="module")
def scaffold_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaffold") / "run"
    result = cli("train", "--preset", "tiny", "--scaffold", "--max-iters", "20", "--out", str(out),
                 "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["config"]["data"]["scaffold"] is True and doc["config"]["model"]["block_size"] == 288
    assert doc["final_eval"]["value_acc"] is not None
    return out


def test_cli_sample_schema_and_prompts_file(scaffold_run, tmp_path):
    one = cli("sample", "--checkpoint", str(scaffold_run), "--schema", "set_alarm", "--prompt",
              "Wake me at 6 am", "--steps", "3", "--policy", "rcr")
    assert one.exit_code == 0, one.stderr
    assert one.stdout.startswith('{"name": "set_alarm", "arguments": {"time": ')
    f = tmp_path / "requests.txt"
    f.write_text("Wake me at 6 am\n\nAlarm at 9 pm called run\n")
    many = cli("sample", "--checkpoint", str(scaffold_run), "--schema", "set_alarm",
               "--prompts-file", str(f), "--steps", "2")
    lines = [json.loads(x) for x in many.stdout.splitlines()]
    assert [x["prompt"] for x in lines] == ["Wake me at 6 am", "Alarm at 9 pm called run"]
    for x in lines:
        assert x["valid"] == (not x["errors"])
        for e in x["errors"]:
            assert e in many.stderr  # each invalid value is reported on stderr too
    js = cli("sample", "--checkpoint", str(scaffold_run), "--schema", "set_alarm", "--prompt", "x",
             "--steps", "2", "--json")
    assert json.loads(js.stdout)["schema"] == "set_alarm"


def test_cli_sample_schema_warns_when_the_checkpoint_never_saw_a_scaffold(scaffold_run, tiny_run):
    args = ["--schema", "set_alarm", "--prompt", "Wake me at 6 am", "--steps", "2"]
    plain = cli("sample", "--checkpoint", str(tiny_run), *args)
    assert plain.exit_code == 0 and plain.stdout.startswith('{"name": "set_alarm"')  # it still samples
    assert "trained without scaffolds" in plain.stderr and "cdt train --scaffold" in plain.stderr
    trained = cli("sample", "--checkpoint", str(scaffold_run), *args)
    assert trained.exit_code == 0 and "trained without scaffolds" not in trained.stderr


def test_cli_sample_schema_bad_input(scaffold_run, tmp_path):
    base = ["sample", "--checkpoint", str(scaffold_run), "--steps", "2"]
    assert_one_line_error(cli(*base + ["--schema", "nope"]), 2, "built-in tools")
    assert_one_line_error(cli(*base + ["--schema", "get_weather", "--prompt", "snow ☃"]), 1, "'☃'")
    assert_one_line_error(cli(*base + ["--schema", "get_weather", "--budget", "unit=3"]), 2,
                          "too small")
    assert_one_line_error(cli(*base + ["--schema", "get_weather", "--budget", "unit=x"]), 2,
                          "FIELD=N")
    (tmp_path / "bad.json").write_text("[1]")
    assert_one_line_error(cli(*base + ["--schema-file", str(tmp_path / "bad.json")]), 2,
                          "tool 1 must be a JSON Schema object, a tool or a list of tools")
    assert_one_line_error(cli(*base + ["--schema", "set_alarm", "--schema-file", "x.json"]), 2,
                          "exactly one")


def test_cli_eval_scaffold(scaffold_run, tiny_run):
    r = cli("eval", "--checkpoint", str(scaffold_run), "--scaffold", "--policies",
            "rcr,confidence,critic", "--steps", "2", "--n", "6", "--json")
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert {x["policy"] for x in rows} == {"rcr", "confidence", "critic"}
    for x in rows:
        assert x["structure"] == 1.0
        assert 0 <= x["call_exact"] <= x["field_exact"] <= 1 and 0 <= x["repetition"] <= 1
    table = cli("eval", "--checkpoint", str(scaffold_run), "--scaffold", "--policies", "rcr",
                "--steps", "2", "--n", "3")
    assert "structure kept in 100.0%" in table.stdout
    assert_one_line_error(cli("eval", "--checkpoint", str(tiny_run), "--scaffold", "--n", "2"), 1,
                          "train with cdt train --scaffold")


def test_cli_eval_scaffold_interrupted_reports_the_settings_it_finished(scaffold_run, monkeypatch):
    import cdt.sampling.infill as infill

    real = infill.generate

    def ctrl_c_at_two_steps(model, ids, protected, cfg, **kw):
        if cfg.steps == 3:
            raise KeyboardInterrupt
        return real(model, ids, protected, cfg, **kw)

    monkeypatch.setattr(infill, "generate", ctrl_c_at_two_steps)
    args = ["eval", "--checkpoint", str(scaffold_run), "--scaffold", "--policies", "confidence", "--steps", "2,3",
            "--n", "3"]
    table = cli(*args)
    assert table.exit_code == 1 and "structure kept in" in table.stdout
    assert "interrupted after 1 of 2 settings" in table.stdout and "interrupted after 1 of 2" in table.stderr
    doc = json.loads(cli(*args + ["--json"]).stdout)
    assert [r["steps"] for r in doc["rows"]] == [2] and doc["interrupted"] is True


def test_every_slot_holds_a_value_of_its_type_from_an_untrained_model(vocab):
    schema = scaffold.builtin("schedule_meeting")  # string, string, integer, boolean
    ids, protected = scaffold.template(schema, vocab, ["Meet Ana"] * 4, SEPARATOR, 400)
    start = len(vocab.encode("Meet Ana\n"))
    constraint = scaffold.SlotConstraint.of([(schema, start)] * 4, vocab)
    for temperature in (0.0, 1.5):
        gen = generate(random_model(vocab), ids, protected, SampleConfig(steps=3, seed=4, temperature=temperature),
                       allow_null=True, constraint=constraint)
        for row in gen.tokens:
            parsed = scaffold.parse(schema, vocab.decode(row[start:]))
            assert parsed.valid, parsed.errors


def test_grading_reads_an_empty_optional_slot_as_null(vocab):
    from cdt.data.toolcalls import ToolCall
    from cdt.grading import grade

    record = next(r for r in generate_records(400, 3) if r.tool == "set_alarm" and r.arguments["label"] is None)
    ids, _ = scaffold.render(scaffold.builtin("set_alarm"), vocab, record.arguments)
    row = torch.tensor(vocab.encode(record.prompt + SEPARATOR) + ids)
    assert all(grade(vocab, record, row, scaffold=True).fields.values())
    assert not grade(vocab, record, row, scaffold=False).fields["label"]  # "" is not null in the plain layout
    assert isinstance(record, ToolCall)
