"""`cdt bench bfcl` end to end on a small BFCL-format folder: every call parses and validates, the
accuracy is what BFCL's rules say of the calls written, the rows feed sweep-tau, bad input is one line."""

import importlib.util
import json

import pytest

from cdt.bfcl.checker import check_call
from tests.helpers import assert_one_line_error, cdt_process, cli


def function(name, properties, required):
    return {"name": name, "description": "d", "parameters": {"type": "dict", "properties": properties,
                                                               "required": required}}


AREA = function("geometry.area", {"base": {"type": "integer"}, "height": {"type": "float"},
                                  "unit": {"type": "string"}}, ["base", "height"])
MIX = function("mix_colors", {"colors": {"type": "array", "items": {"type": "string"}},
                              "glossy": {"type": "boolean"}}, ["colors"])
TRIP = function("plan_trip", {"city": {"type": "string"}, "days": {"type": "integer"},
                              "mode": {"type": "string", "enum": ["car", "train"]}}, ["city", "days"])
CIRCLE = function("geometry.area", {"radius": {"type": "integer"}}, ["radius"])
SIMPLE = [
    ("simple_python_0", "Area of a shape with base 10 and height 2.5, in cm.", [AREA],
     {"geometry.area": {"base": [10], "height": [2.5], "unit": ["cm", ""]}}),
    ("simple_python_1", "Mix red, blue and green paint.", [MIX],
     {"mix_colors": {"colors": [["red", "blue", "green"]], "glossy": ["", False]}}),
    ("simple_python_2", "Plan a trip to Zürich for 3 days by train — à bientôt!", [TRIP],
     {"plan_trip": {"city": ["Zürich"], "days": [3], "mode": ["train"]}}),
    ("simple_python_3", "x" * 900, [AREA], {"geometry.area": {"base": [1], "height": [1.0], "unit": [""]}}),
    # another function of the same name in the same batch: each request's call follows its own
    ("simple_python_4", "Area of a circle of radius 3", [CIRCLE], {"geometry.area": {"radius": [3]}}),
]
MULTIPLE = [
    ("multiple_0", "Plan a trip to Oslo for 4 days", [AREA, TRIP, MIX],
     {"plan_trip": {"city": ["Oslo"], "days": [4], "mode": ["", "car"]}}),
    ("multiple_1", "Mix yellow and white", [TRIP, MIX], {"mix_colors": {"colors": [["yellow", "white"]],
                                                                         "glossy": [""]}}),
]


@pytest.fixture(scope="module")
def bfcl_dir(tmp_path_factory):
    return write_bfcl_dir(tmp_path_factory.mktemp("bfcl"))


def write_bfcl_dir(root):
    """SIMPLE and MULTIPLE as a BFCL data folder (questions, and answers under possible_answer/)."""
    (root / "possible_answer").mkdir()
    for category, items in (("simple_python", SIMPLE), ("multiple", MULTIPLE)):
        (root / f"BFCL_v4_{category}.json").write_text("".join(
            json.dumps({"id": i, "question": [[{"role": "user", "content": q}]], "function": f}) + "\n"
            for i, q, f, _ in items), encoding="utf-8")
        (root / "possible_answer" / f"BFCL_v4_{category}.json").write_text("".join(
            json.dumps({"id": i, "ground_truth": [a]}) + "\n" for i, _, _, a in items), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def functions_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("functions") / "run"
    result = cli("train", "--preset", "tiny", "--data", "functions", "--scaffold", "--max-iters", "20",
                 "--set", "data.n_records=1500", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    return out


@pytest.mark.parametrize("policy, temperature", [("confidence", 0.0), ("critic", 1.5),
                                                 pytest.param("random", 1.0, marks=pytest.mark.slow)])
def test_every_call_parses_validates_and_is_scored_by_bfcls_rules(functions_run, bfcl_dir, tmp_path, policy,
                                                                  temperature):
    rows = tmp_path / "rows.jsonl"
    result = cli("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir, "--rows", rows, "--json",
                 "--policy", policy, "--temperature", temperature, "--steps", "6", "--batch-size", "5")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    simple, multiple = doc["categories"]
    assert (simple["n"], multiple["n"], simple["unfit"]) == (5, 2, 1)  # the 900-character request does not fit
    for c in (simple, multiple):
        assert c["parse_rate"] == c["valid_rate"] == 1.0
    lines = [json.loads(x) for x in rows.read_text().splitlines()]
    assert [x["id"] for x in lines] == [i for i, *_ in SIMPLE + MULTIPLE]
    truth = {i: (f, a) for i, _, f, a in SIMPLE + MULTIPLE}
    for x in lines:
        assert x["label"] == int(not x["ok"]) and 0.0 <= x["score"] <= 1.0
        if x["kind"] != "unfit":
            functions, expected = truth[x["id"]]
            assert check_call(functions, json.loads(x["text"]), expected).ok == x["ok"]
            assert json.loads(x["text"])["name"] in {f["name"] for f in functions}
    right = sum(x["ok"] for x in lines[:5])
    assert simple["accuracy"] == right / 5
    assert sum(v["n"] for v in simple["by_type"].values()) == 3 + 2 + 3 + 3 + 1
    assert set(json.loads(lines[4]["text"])["arguments"]) == {"radius"}


def test_right_calls_are_counted_right(monkeypatch, functions_run, bfcl_dir):
    """A generator that always writes the reference: accuracy 100% wherever the request fits."""
    import cdt.bfcl.run as run
    from cdt.scaffold.sample import Calls
    from cdt.scaffold.validate import parse

    real = run.fill_calls

    def perfect(model, vocab, rows, cfg, *a, **k):
        out = real(model, vocab, rows, cfg, *a, **k)
        for c, (request, tools) in zip(out.calls, rows):
            _, functions, expected = next((q, f, e) for _, q, f, e in SIMPLE + MULTIPLE if q == request)
            name, possible = next(iter(expected.items()))
            call = {"name": name, "arguments": {k: v[0] if v[0] != "" else None for k, v in possible.items()}}
            c.parsed = parse(tools, json.dumps(call))
        return Calls(out.calls, out.generation, out.filled)

    monkeypatch.setattr(run, "fill_calls", perfect)
    result = cli("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir, "--json", "--steps", "2")
    doc = json.loads(result.stdout)
    assert [c["accuracy"] for c in doc["categories"]] == [0.8, 1.0]  # 4 of 5 fit


def test_rows_feed_sweep_tau_and_the_subset_is_seeded(functions_run, bfcl_dir, tmp_path):
    rows = tmp_path / "rows.jsonl"
    args = ("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir, "--steps", "2", "--n", "2")
    first = cli(*args, "--rows", rows, "--json", "--seed", "3")
    assert first.exit_code == 0, first.stderr
    assert [c["n"] for c in json.loads(first.stdout)["categories"]] == [2, 2]
    again = cli(*args, "--json", "--seed", "3", "--categories", "simple_python")
    assert json.loads(again.stdout)["categories"][0] == json.loads(first.stdout)["categories"][0] | {
        "seconds": json.loads(again.stdout)["categories"][0]["seconds"]}
    sweep = cli("sweep-tau", rows, "--json", "--out-dir", tmp_path / "reports")
    assert sweep.exit_code in (0, 1), sweep.stderr  # too few samples may not reach the target; it still reads
    refused = cli(*args, "--rows", rows)
    assert_one_line_error(refused, 2, "--overwrite")


def test_bad_input_is_one_line(functions_run, bfcl_dir, tmp_path, monkeypatch):
    assert_one_line_error(cli("bench", "mmlu", "--checkpoint", functions_run), 2, "unknown benchmark 'mmlu'")
    assert_one_line_error(cli("bench", "bfcl", "--checkpoint", functions_run, "--data", tmp_path / "none"), 2,
                          "not a folder")
    assert_one_line_error(cli("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir,
                              "--categories", "parallel"), 2, "unknown categories 'parallel'")
    assert_one_line_error(cli("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir, "--n", "0"), 2,
                          "--n")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert_one_line_error(cli("bench", "bfcl", "--checkpoint", functions_run), 1, "pip install --no-deps bfcl-eval")


def test_scaffold_eval_on_functions_never_seen(functions_run):
    """The functions corpus's held-out calls (of functions no training row has) fill under their own schemas:
    every call parses and validates, arrays and nested objects included."""
    result = cli("eval", "--checkpoint", functions_run, "--scaffold", "--n", "24", "--steps", "3", "--policies",
                 "confidence,critic", "--json")
    assert result.exit_code == 0, result.stderr
    for row in json.loads(result.stdout)["rows"]:
        assert row["json_valid"] == row["schema_valid"] == row["structure"] == 1.0


@pytest.mark.slow
def test_as_a_real_process(functions_run, bfcl_dir):
    done = cdt_process("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir, "--steps", "2",
                       "--categories", "multiple")
    assert done.returncode == 0, done.stderr
    assert "multiple" in done.stdout and "accuracy" in done.stdout


@pytest.mark.slow
def test_the_benchmark_script_pairs_policies_at_equal_passes(functions_run, bfcl_dir):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bfcl.py"
    done = subprocess.run([sys.executable, str(script), "--checkpoint", str(functions_run), "--data", str(bfcl_dir),
                           "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    for c in ("simple_python", "multiple"):
        part = doc["categories"][c]
        assert part["critic"]["passes"] == pytest.approx(part["confidence"]["passes"], rel=0.25)
        assert part["paired"]["n"] == part["critic"]["n"]
        assert set(part["critic_score_auroc"]) == {"confidence", "critic"}


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_a_stopped_run_keeps_its_rows_as_partial(monkeypatch, functions_run, bfcl_dir, tmp_path, stop):
    """Ctrl-C (or a failure) in the second batch: the first batch's rows stay, as <name>.partial, never as a
    complete file; Ctrl-C also prints the figures so far."""
    import cdt.bfcl.run as run

    real, calls = run._run_batch, []

    def second_stops(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise stop("stop")
        return real(*a, **k)

    monkeypatch.setattr(run, "_run_batch", second_stops)
    rows = tmp_path / "rows.jsonl"
    result = cli("bench", "bfcl", "--checkpoint", functions_run, "--data", bfcl_dir, "--steps", "2",
                 "--batch-size", "2", "--rows", rows, "--json")
    assert result.exit_code == 1 and not rows.exists()
    assert len((tmp_path / "rows.jsonl.partial").read_text().splitlines()) == 2
    if stop is KeyboardInterrupt:
        assert json.loads(result.stdout)["categories"][0]["n"] == 2
