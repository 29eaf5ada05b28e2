"""The embedded corpus: deterministic, verifiable, typed, and really transformed."""

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from cdt.data import SEPARATOR, load_corpus, toolcalls
from cdt.data.toolcalls import CURRENCIES, MONTHS, TOOLS, check_answer, number_words, verify

RECORDS = toolcalls.generate(4000, seed=3)


def test_same_seed_same_records_other_seed_other_records():
    assert toolcalls.generate(200, 5) == toolcalls.generate(200, 5)
    assert toolcalls.generate(200, 5) != toolcalls.generate(200, 6)


@pytest.mark.slow  # fresh interpreters with other hash seeds: run by .ci/run after the fast suite
def test_deterministic_across_processes_and_hash_seeds():
    code = "from cdt.data import toolcalls; print(toolcalls.generate(50, 9)[-1].answer)"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(h), "PATH": ""}).stdout for h in (1, 2)}
    assert outs == {toolcalls.generate(50, 9)[-1].answer + "\n"}


def test_every_record_verifies():
    assert [(r.id, verify(r)) for r in RECORDS if verify(r)] == []


def test_tools_and_types_cover_the_requirements():
    assert len(TOOLS) >= 6
    types = {a.type for args in TOOLS.values() for a in args}
    assert {"string", "integer", "number", "boolean", "enum"} <= types
    counts = Counter(r.tool for r in RECORDS)
    assert set(counts) == set(TOOLS) and min(counts.values()) > 300
    optional = [(r, a.name) for r in RECORDS for a in TOOLS[r.tool] if a.optional]
    assert any(r.arguments[n] is None for r, n in optional) and any(r.arguments[n] is not None for r, n in optional)
    assert '"label": null' in next(r.answer for r in RECORDS if r.tool == "set_alarm" and r.arguments["label"] is None)


def test_enough_variety_that_memorising_is_impossible():
    prompts = [r.prompt for r in RECORDS]
    assert len(set(prompts)) > 0.95 * len(prompts)
    for tool in TOOLS:  # several phrasings per tool
        starts = {r.prompt.split()[0].lower() for r in RECORDS if r.tool == tool}
        assert len(starts) >= 2, tool


def test_number_words():
    assert [number_words(n) for n in (0, 7, 13, 40, 45, 100, 106, 999)] == [
        "zero", "seven", "thirteen", "forty", "forty-five", "one hundred", "one hundred and six",
        "nine hundred and ninety-nine"]


# An independent oracle: parse the request the way a person would, compare with the answer.
WORDS = {number_words(n): n for n in range(1000)}
TIME = re.compile(r"\b(\d{1,2})(?::(\d\d))? ?(am|pm|a\.m\.|p\.m\.)")
DATE = re.compile(r"(?:the (\d+)\w\w of (\w+) (\d{4}))|(?:(\w+) (\d+)(?:\w\w)?,? (\d{4}))")


def said_time(prompt):
    h, m, ampm = TIME.search(prompt).groups()
    h = int(h) % 12 + (12 if ampm.startswith("p") else 0)
    return f"{h:02d}:{int(m or 0):02d}"


def said_date(prompt):
    d1, month1, y1, month2, d2, y2 = DATE.search(prompt).groups()
    day, month, year = (d1, month1, y1) if d1 else (d2, month2, y2)
    return f"{int(year):04d}-{MONTHS.index(month) + 1:02d}-{int(day):02d}"


def said_number(text):
    return int(text) if text.isdigit() else WORDS[text]


@pytest.mark.parametrize("tool", ["set_alarm", "book_table"])
def test_times_are_converted_to_24_hours(tool):
    for r in (r for r in RECORDS if r.tool == tool):
        assert r.arguments["time"] == said_time(r.prompt), r.prompt


@pytest.mark.parametrize("tool", ["book_table", "schedule_meeting", "search_flights"])
def test_dates_are_converted_to_iso(tool):
    for r in (r for r in RECORDS if r.tool == tool):
        assert r.arguments["date"] == said_date(r.prompt), r.prompt


def test_number_words_become_digits():
    for r in (r for r in RECORDS if r.tool == "book_table"):
        said = re.search(r"(?:for|Table for) ([\w-]+)", r.prompt).group(1)
        assert r.arguments["party_size"] == said_number(said), r.prompt
    assert any(not re.search(r"\d", r.prompt.split(" on ")[0]) for r in RECORDS if r.tool == "book_table")


def test_currency_names_become_iso_codes():
    for r in (r for r in RECORDS if r.tool == "convert_currency"):
        names = sorted((n for n in CURRENCIES if f" {n}" in r.prompt), key=len, reverse=True)
        codes = {CURRENCIES[n] for n in names}
        assert {r.arguments["from"], r.arguments["to"]} <= codes, r.prompt


def test_unit_synonyms_become_enum_values():
    seen = Counter()
    for r in (r for r in RECORDS if r.tool == "get_weather"):
        said = next(w for u, ws in toolcalls.UNIT_WORDS.items() for w in ws if w in r.prompt)
        assert said in toolcalls.UNIT_WORDS[r.arguments["unit"]]
        seen[said] += 1
    assert len(seen) == sum(len(w) for w in toolcalls.UNIT_WORDS.values())


def test_check_answer_field_by_field():
    r = next(r for r in RECORDS if r.tool == "schedule_meeting")
    assert check_answer(r, r.answer).exact
    wrong = json.loads(r.answer)
    wrong["arguments"]["minutes"] += 5
    check = check_answer(r, json.dumps(wrong))
    assert check.valid_json and check.name_ok and not check.exact
    assert [k for k, ok in check.fields.items() if not ok] == ["minutes"]
    as_int = json.loads(r.answer)
    as_int["arguments"]["online"] = int(as_int["arguments"]["online"])  # 1 is not true in JSON
    assert not check_answer(r, json.dumps(as_int)).fields["online"]
    broken = check_answer(r, r.answer[:-3])
    assert not broken.valid_json and not any(broken.fields.values())


def test_split_has_no_shared_prompts_and_reports_it():
    corpus = load_corpus("toolcalls", 256, n_records=3000, seed=1)
    assert corpus.info["overlap"] == 0
    val = {r.prompt for r in corpus.records}
    train = {corpus.vocab.decode(row).split(SEPARATOR)[0] for row in corpus.train.ids}
    assert len(train) > 2000 and not (val & train)
    assert 0.05 < corpus.info["val"] / corpus.info["records"] < 0.15
    assert corpus.info["train"] + corpus.info["val"] == 3000
