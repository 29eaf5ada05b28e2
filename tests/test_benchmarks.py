"""Benchmarks run by hand and under `pytest -m slow`; figures are printed, never asserted as wall-clock."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_prints_its_figures():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--preset", "tiny",
                           "--steps", "3"], capture_output=True, text=True, timeout=600, check=True)
    doc = json.loads(proc.stdout)
    for part in ("generator_only", "with_critic"):
        assert doc[part]["positions_per_s"] > 0 and 0 < doc[part]["mfu"] < 1.5
    assert doc["critic_step_cost_ratio"] > 1.0  # the critic pass is never free
    from cdt.config import resolve

    model = resolve("tiny").model
    c = doc["trunk_ceiling"]
    assert c["rows"] == doc["batch_size"] and 0 < c["width"] <= model.block_size
    # the layer's FLOPs split as flops_per_position counts them: 12·w·d attention, 6·(4 + 2·mlp_ratio)·d² products
    assert c["attention_share_of_flops"] == pytest.approx(2 * c["width"] / (2 * c["width"] + model.d_model * (4 + 2 * model.mlp_ratio)))
    # the two parts' combined rate lies between their own rates
    shares = (c["matmul_share_of_peak"], c["attention_share_of_peak"])
    assert min(shares) <= c["mfu"] <= max(shares) and min(shares) > 0
    print(json.dumps(doc, indent=2))


@pytest.mark.parametrize("flags, says", [(["--ngram", "1"], "model.ngram must be 0 (off) or 2 to 8"),
                                         (["--batch-size", "0"], "train.batch_size must be at least 1"),
                                         (["--critic-rows", "-1"], "train.critic_rows must be at least 0"),
                                         (["--preset", "nope"], "unknown preset 'nope'")])
def test_train_throughput_refuses_what_cdt_train_refuses(flags, says, capsys):
    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    with pytest.raises(SystemExit) as stopped:
        benchmark.main(flags)
    out, err = capsys.readouterr()
    assert stopped.value.code == 2 and says in err and not out  # before any measuring


@pytest.mark.slow
def test_sample_throughput_prints_its_figures():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sample_throughput.py"), "--preset", "tiny",
                           "--rows", "8", "--steps", "4", "--batches", "1,8", "--repeats", "2"], capture_output=True, text=True,
                          timeout=600, check=True)
    doc = json.loads(proc.stdout)
    assert doc["results"]["confidence@1"]["passes_per_step"] == 1.0
    assert doc["results"]["critic@8"]["passes_per_step"] == 2.0
    assert doc["results"]["confidence@1"]["passes_per_row"] == 4.0 and doc["results"]["critic@8"]["passes_per_row"] == 8.0
    assert doc["results"]["critic-1pass@8"]["passes_per_step"] == 1.0  # the critic read from the generator's pass
    for k, r in doc["cost_over_confidence"].items():
        conf = doc["results"][f"confidence@{k.split('@')[1]}"]
        assert r["ms_per_row"] == pytest.approx(doc["results"][k]["ms_per_row"] / conf["ms_per_row"])
    assert doc["cost_over_confidence"]["critic-1pass@8"]["passes_per_row"] == 1.0
    assert doc["cost_over_confidence"]["critic@1"]["passes_per_row"] == 2.0
    for r in doc["results"].values():
        assert 0 <= r["exact"] <= 1 and r["ms_per_row"] > 0
        assert r["exact_per_pass"] == pytest.approx(100 * r["exact"] / r["passes_per_row"])
    for r in doc["results"].values():
        assert r["model_gflops_per_s"] > 0 and r["share_of_matmul_peak"] == pytest.approx(
            r["model_gflops_per_s"] / doc["matmul_peak_gflops"])
    for p, ceiling in doc["ceiling_over_batch1"].items():
        assert ceiling == pytest.approx(doc["matmul_peak_gflops"] / doc["results"][f"{p}@1"]["model_gflops_per_s"])
    print(json.dumps(doc, indent=2))


@pytest.mark.slow
def test_sweep_tau_benchmark_finds_the_naive_optimum():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep_tau.py"), "--n", "20000", "--n-tau", "100",
                           "--repeats", "1"], capture_output=True, text=True, timeout=600, check=True)
    doc = json.loads(proc.stdout)
    assert doc["same_optimum"] is True and doc["exact_candidates"] > 1000
    print(json.dumps(doc, indent=2))


@pytest.mark.slow
def test_calibrate_scaling_prints_its_figures():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibrate_scaling.py"), "--preset", "tiny",
                           "--sizes", "4,12", "--steps", "2", "--batch-size", "4"], capture_output=True, text=True,
                          timeout=600, check=True)
    doc = json.loads(proc.stdout)
    assert [r["n"] for r in doc["runs"]] == [4, 12] and doc["n_ratio"] == 3
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 0 for r in doc["runs"])
    print(json.dumps(doc, indent=2))


@pytest.mark.slow
def test_scaffold_constraint_prints_its_figures():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaffold_constraint.py"), "--preset", "tiny",
                           "--rows", "8", "--steps", "4", "--temperature", "1.0"], capture_output=True, text=True,
                          timeout=600, check=True)
    doc = json.loads(proc.stdout)
    for part in ("builtin_tools", "typed_tool"):
        assert doc[part]["valid_calls"] == doc[part]["rows"] == 8  # every call validates
        assert 0 < doc[part]["seconds_inside_constraint"] < doc[part]["seconds_with_constraint"]
    print(json.dumps(doc, indent=2))



@pytest.mark.slow
def test_promises_benchmark_keeps_the_guarantee_and_shows_the_in_sample_choice_does_not():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "promises.py"), "--trials", "100"],
                          capture_output=True, text=True, timeout=600, check=True)
    doc = json.loads(proc.stdout)
    g, s = doc["guaranteed"], doc["in_sample"]
    assert g["recall_broken_share"] <= 0.05 + 0.06  # the promise, plus the binomial noise of 100 trials
    assert s["recall_broken_share"] > 0.2 and g["mean_precision"] < s["mean_precision"]  # what the promise costs
    assert g["accuracy_broken_share"] <= 0.11 and g["mean_coverage"] < s["mean_coverage"]


@pytest.mark.slow
def test_backbone_throughput_prints_its_figures():
    pytest.importorskip("transformers")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backbone_throughput.py"), "--size", "tiny",
                           "--device", "cpu", "--iters", "6", "--rows", "4", "--steps", "4"], capture_output=True,
                          text=True, timeout=600, check=True)
    doc = json.loads(proc.stdout)
    assert doc["train_frozen_tokens_per_s"] > 0 and doc["train_trunk_tokens_per_s"] > 0
    assert doc["sampling"]["critic@4"]["passes_per_step"] == 2.0
    assert doc["sampling"]["critic-1pass@4"]["passes_per_step"] == 1.0


@pytest.mark.slow
def test_critic_ceiling_decodes_as_eval_does_and_repairs_only_what_is_flagged(tiny_run):
    from tests.helpers import cdt_process

    sampler = ["--steps", "4", "--threshold", "0.5"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "critic_ceiling.py"), "--checkpoint",
                           str(tiny_run), "--n", "24", "--batch-size", "8", "--levels", "0.5,1", *sampler],
                          capture_output=True, text=True, timeout=600, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})  # as cdt_process runs eval: the same floats
    doc = json.loads(proc.stdout)
    done = cdt_process("eval", "--checkpoint", str(tiny_run), "--n", "24", "--policies", "confidence", "--commit",
                       "threshold", "--temperature", "0", "--spread", "--json", *sampler)
    row = json.loads(done.stdout)["rows"][0]
    assert doc["decoded"] == {"exact": row["exact"], "passes_per_row": row["row_passes"]}  # the same decode
    base = doc["decoded"]["passes_per_row"]
    nothing = doc["judges"]["critic>1"]  # P(wrong) > 1 flags nothing: nothing changes, the judge's pass is paid
    assert nothing["rows_flagged"] == 0
    assert nothing["refill"] == nothing["second_choice"] == {"exact": doc["decoded"]["exact"], "passes_per_row": base + 1}
    oracle = doc["judges"]["oracle"]  # flags exactly the rows that are wrong
    assert oracle["rows_flagged"] == pytest.approx(1 - doc["decoded"]["exact"])
    assert oracle["second_choice"]["passes_per_row"] == pytest.approx(base + 1 + oracle["rows_flagged"])
    for j in doc["judges"].values():  # a row nothing flags is left as it was: right rows stay right
        assert j["refill"]["exact"] >= doc["decoded"]["exact"] - j["rows_flagged"]
    assert 0.0 <= doc["critic_token_auroc"] <= 1.0
    print(json.dumps(doc, indent=2))
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "critic_ceiling.py"), "--checkpoint",
                          str(tiny_run), "--levels", "half"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and not bad.stdout and "could not convert string to float: 'half'" in bad.stderr
