"""The paired comparison of `cdt eval`: McNemar's exact test and its interval against brute-force
binomial sums, the pairing rule, and `--rows` through the real command line."""

import json
import math

import pytest

from cdt.mcnemar import compare, equal_cost_pairs, mcnemar

from tests.helpers import assert_one_line_error, cli


def binom_tail_ge(k: int, m: int, q: float) -> float:
    return sum(math.comb(m, i) * q**i * (1 - q) ** (m - i) for i in range(k, m + 1))


def test_mcnemar_p_is_the_doubled_binomial_tail_of_the_smaller_count():
    for m in range(0, 25):
        for wins in range(m + 1):
            expected = min(1.0, 2 * sum(math.comb(m, i) for i in range(min(wins, m - wins) + 1)) / 2**m) if m else 1.0
            p, _, _ = mcnemar(wins, m - wins, 50)
            assert p == pytest.approx(expected, rel=1e-12, abs=1e-15), (wins, m)


def test_interval_is_clopper_pearson_on_the_discordant_rows_and_agrees_with_the_test():
    n = 60
    for m in range(1, 41):
        for wins in range(m + 1):
            p, low, high = mcnemar(wins, m - wins, n)
            d = (2 * wins - m) / n
            assert low <= d <= high
            # back to the share of wins among the m discordant rows, then the defining tail sums
            q_low, q_high = (low * n / m + 1) / 2, (high * n / m + 1) / 2
            if wins > 0:
                assert binom_tail_ge(wins, m, q_low) == pytest.approx(0.025, abs=1e-9)
            else:
                assert q_low == pytest.approx(0.0, abs=1e-12)
            if wins < m:
                assert 1 - binom_tail_ge(wins + 1, m, q_high) == pytest.approx(0.025, abs=1e-9)
            else:
                assert q_high == pytest.approx(1.0, abs=1e-12)
            assert (low > 0 or high < 0) == (p < 0.05), (wins, m, p, low, high)


def test_compare_counts_a_hand_made_case_and_puts_the_better_setting_first():
    right_a = [True, True, False, False, True, True]
    right_b = [False, True, True, False, False, True]
    r = compare("critic@16", right_a, "confidence@32", right_b, "passes")
    assert (r.a, r.b, r.only_a, r.only_b, r.both, r.n) == ("critic@16", "confidence@32", 2, 1, 2, 6)
    assert r.diff == pytest.approx(1 / 6)
    flipped = compare("confidence@32", right_b, "critic@16", right_a, "passes")
    assert (flipped.a, flipped.only_a, flipped.only_b, flipped.diff) == ("critic@16", 2, 1, r.diff)
    assert flipped.p_value == r.p_value == 1.0  # 2 wins against 1 is no evidence at all
    none = compare("x@1", [True, False], "y@1", [True, False], "steps")
    assert (none.diff, none.low, none.high, none.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        compare("x@1", [True], "y@1", [True, False], "steps")


def test_paired_table_keeps_every_number_whole_in_80_columns():
    from rich.console import Console

    from cdt.render import paired_table

    a = [True] * 54 + [False] * 39 + [True] * 400 + [False] * 531
    b = [False] * 54 + [True] * 39 + [True] * 400 + [False] * 531
    console = Console(width=80, record=True)
    console.print(paired_table([compare("critic-confidence@16", a, "confidence@32", b, "passes")], 1024))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "paired on the same 1,024 rows" in text
    row = next(line for line in text.splitlines() if line.startswith(" passes"))
    assert row.split()[-5:] == ["54", "39", "+1.5", "-0.5..+3.3", "0.146"]  # p from binomtest(54, 93)
    assert "critic-confide" in text and "…" not in text  # a long name folds, nothing is cut


def test_pairs_are_different_policies_at_equal_steps_or_equal_passes():
    hits = [True, False, True]
    settings = [("confidence", 8, 8.0, hits), ("confidence", 16, 16.0, hits), ("confidence", 32, 31.6, hits),
                ("critic", 8, 16.0, hits), ("critic", 16, 32.0, hits), ("random", 16, 16.0, hits)]
    got = [(p.equal, {p.a, p.b}) for p in equal_cost_pairs(settings)]
    assert got == [
        ("passes", {"confidence@16", "critic@8"}),
        ("passes", {"confidence@32", "critic@16"}),  # 31.6 passes (a reused pass) is within 5% of 32
        ("passes", {"critic@8", "random@16"}),
        ("steps", {"confidence@8", "critic@8"}),
        ("steps", {"confidence@16", "critic@16"}),
        ("steps", {"confidence@16", "random@16"}),  # equal steps (and passes): labelled by steps
        ("steps", {"critic@16", "random@16"}),
    ]
    # a schedule that finishes early (power:4) leaves fractional means: 22.4 and 22.9 passes pair, 12 and 16 do not
    early = [("confidence", 32, 22.4, hits), ("critic", 16, 22.9, hits), ("critic", 8, 12.0, hits),
             ("random", 16, 16.0, hits)]
    assert [(p.equal, {p.a, p.b}) for p in equal_cost_pairs(early)] == [("passes", {"confidence@32", "critic@16"}),
                                                                         ("steps", {"critic@16", "random@16"})]


def test_eval_rows_file_and_paired_json_agree(tiny_run, tmp_path):
    out = tmp_path / "sub" / "rows.jsonl"
    result = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence,critic",
                 "--steps", "2,4", "--n", "7", "--batch-size", "3", "--rows", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4 * 7 and doc["rows_file"] == str(out)
    by = {}
    for line in lines:
        by.setdefault((line["policy"], line["steps"]), {})[line["index"]] = line
        assert line["exact"] == (line["text"] == line["reference"])
        assert 0 <= line["chars_right"] <= line["chars"] and 0 <= line["fields_right"] <= line["fields"]
    for row in doc["rows"]:
        per = by[(row["policy"], row["steps"])]
        assert sorted(per) == list(range(7))
        assert row["exact"] == sum(o["exact"] for o in per.values()) / 7
        assert row["char_acc"] == sum(o["chars_right"] for o in per.values()) / sum(o["chars"] for o in per.values())
        assert row["json_valid"] == sum(o["json_valid"] for o in per.values()) / 7
        assert "outcomes" not in row
    assert [(p["equal"], {p["a"], p["b"]}) for p in doc["paired"]] == [
        ("passes", {"confidence@4", "critic@2"}), ("steps", {"confidence@2", "critic@2"}),
        ("steps", {"confidence@4", "critic@4"})]
    for p in doc["paired"]:  # recount from the file
        (pa, sa), (pb, sb) = (x.split("@") for x in (p["a"], p["b"]))
        a, b = by[(pa, int(sa))], by[(pb, int(sb))]
        assert p["only_a"] == sum(a[i]["exact"] and not b[i]["exact"] for i in range(7))
        assert p["only_b"] == sum(b[i]["exact"] and not a[i]["exact"] for i in range(7))
        assert p["only_a"] >= p["only_b"] and p["n"] == 7
    # the same pairs on JSON validity, recounted from the file
    assert [(p["a"], p["b"]) for p in doc["paired_json_valid"]] != [] and len(doc["paired_json_valid"]) == 3
    for p in doc["paired_json_valid"]:
        (pa, sa), (pb, sb) = (x.split("@") for x in (p["a"], p["b"]))
        a, b = by[(pa, int(sa))], by[(pb, int(sb))]
        assert p["only_a"] == sum(a[i]["json_valid"] and not b[i]["json_valid"] for i in range(7))
        assert p["only_b"] == sum(b[i]["json_valid"] and not a[i]["json_valid"] for i in range(7))
        assert p["both"] == sum(a[i]["json_valid"] and b[i]["json_valid"] for i in range(7))
        assert p["only_a"] >= p["only_b"]
    table = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence,critic",
                "--steps", "2", "--n", "3")
    assert table.exit_code == 0 and "paired on the same 3 rows · exact match" in table.stdout
    assert "paired on the same 3 rows · JSON valid" in table.stdout


def test_eval_rows_never_overwrites_and_leaves_nothing_when_interrupted(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "rows.jsonl"
    out.write_text("keep me\n")
    args = ["eval", "--checkpoint", str(tiny_run), "--policies", "confidence", "--steps", "2", "--n", "2"]
    assert_one_line_error(cli(*args + ["--rows", str(out)]), 2, "exists")
    assert out.read_text() == "keep me\n"
    assert_one_line_error(cli(*args + ["--rows", str(tmp_path / "x.jsonl"), "--scaffold"]), 2,
                          "--rows is not available with --scaffold")

    import cdt.sampling.infill as infill

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(infill, "generate", interrupted)  # Ctrl-C before any setting finished
    fresh = tmp_path / "fresh.jsonl"
    assert_one_line_error(cli(*args + ["--rows", str(fresh)]), 1, "interrupted")
    assert list(tmp_path.iterdir()) == [out]  # neither the file nor a partial one


def test_eval_interrupted_reports_the_settings_it_finished(tiny_run, tmp_path, monkeypatch):
    import cdt.sampling.infill as infill

    args = ["eval", "--checkpoint", str(tiny_run), "--policies", "confidence,critic", "--steps", "2", "--n", "3"]
    whole = json.loads(cli(*args + ["--json"]).stdout)
    real, calls = infill.generate, []

    def ctrl_c_in_the_second_setting(*a, **k):  # --n 3 fits one batch: one call per setting
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(infill, "generate", ctrl_c_in_the_second_setting)
    out = tmp_path / "rows.jsonl"
    result = cli(*args + ["--rows", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: interrupted after 1 of 2 settings; stdout has their figures, "
                                     f"{out}.partial their rows")
    assert "interrupted after 1 of 2 settings" in result.stdout and "confidence" in result.stdout
    assert "critic" not in result.stdout and not out.exists()
    kept = [json.loads(line) for line in (tmp_path / "rows.jsonl.partial").read_text().splitlines()]
    assert [(r["policy"], r["steps"], r["index"]) for r in kept] == [("confidence", 2, i) for i in range(3)]

    calls.clear()
    doc = json.loads(cli(*args + ["--json"]).stdout)
    assert (doc["interrupted"], doc["settings"], doc["finished"]) == (True, 2, 1)
    assert (whole["interrupted"], whole["finished"]) == (False, 2)
    timed = ("seconds", "ms_per_row")
    first = {k: v for k, v in whole["rows"][0].items() if k not in timed}
    assert [{k: v for k, v in r.items() if k not in timed} for r in doc["rows"]] == [first]  # as if uninterrupted


def test_eval_rows_says_what_a_killed_runleft_behind(tiny_run, tmp_path):
    from tests.helpers import dead_pid, left_behind

    out = tmp_path / "rows.jsonl"
    gone = dead_pid()
    left = left_behind(out, gone, '{"policy": "confidence"}\n{"poli', age=300)
    r = cli("eval", "--checkpoint", str(tiny_run), "--policies", "confidence", "--steps", "2",
            "--n", "2", "--rows", str(out))
    assert r.exit_code == 0, r.stderr
    assert f"process {gone}) left 1 line in" in r.stderr and "rows.jsonl.partial" in r.stderr
    assert (tmp_path / "rows.jsonl.partial").read_text() == '{"policy": "confidence"}\n'
    assert len(out.read_text().splitlines()) == 2 and not left.exists()


def test_json_validity_is_paired_only_where_it_is_graded():
    from cdt.sampling.evaluate import EvalRow, RowOutcome

    def setting(exact, valid):
        outs = [RowOutcome(i, e, 0, 1, 0, 1, v, None, None, "", "") for i, (e, v) in enumerate(zip(exact, valid))]
        return EvalRow("critic", 4, 8.0, 8.0, 0.0, None, 0.0, None, None, 0.0, outs)

    toolcalls = setting([True, False, False], [True, True, False])
    assert toolcalls.hits() == [True, False, False] and toolcalls.hits("json_valid") == [True, True, False]
    text = setting([True, False, False], [None, None, None])  # a text checkpoint: no JSON to grade
    assert text.hits() == [True, False, False] and text.hits("json_valid") is None
