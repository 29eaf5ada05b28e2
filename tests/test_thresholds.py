"""The τ sweep against scikit-learn and a brute-force loop over every threshold."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from cdt.errors import UsageError
from cdt.thresholds import analyze, best_precision_at_recall, candidate_taus, cohens_d, sweep


def data(seed, n=300, levels=25):
    """Scores with many ties (few distinct levels), labels correlated with the score."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, levels, n) / levels
    y = (rng.random(n) < 0.15 + 0.6 * s).astype(int)
    return s, y


def brute_force(s, y, direction, taus, target):
    """Try every τ; keep the highest precision with recall >= target, then the highest recall."""
    best = None
    for tau in taus:
        flag = s >= tau if direction == "ge" else s <= tau
        tp = int((flag & (y == 1)).sum())
        fp = int((flag & (y == 0)).sum())
        if tp + fp == 0:
            continue
        precision, recall = tp / (tp + fp), tp / (y == 1).sum()
        if recall < target:
            continue
        key = (precision, recall)
        if best is None or key > best[0]:
            best = (key, tau, tp, fp)
    return best


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("direction", ["ge", "le"])
def test_exact_sweep_matches_brute_force(seed, direction):
    s, y = data(seed)
    target = [0.5, 0.8, 0.9, 1.0][seed % 4]
    sw = sweep(s, y, direction)
    assert np.array_equal(sw.taus, np.unique(s))
    for i, tau in enumerate(sw.taus):  # every candidate's counts
        flag = s >= tau if direction == "ge" else s <= tau
        assert sw.tp[i] == (flag & (y == 1)).sum() and sw.fp[i] == (flag & (y == 0)).sum()
    expected = brute_force(s, y, direction, np.unique(s), target)
    i = best_precision_at_recall(sw, target)
    assert sw.taus[i] == expected[1] and (sw.tp[i], sw.fp[i]) == expected[2:]


@pytest.mark.parametrize("seed", range(6))
def test_precision_recall_agree_with_sklearn_both_directions(seed):
    s, y = data(seed, levels=40)
    for direction, oriented in (("ge", s), ("le", -s)):
        precision, recall, thresholds = precision_recall_curve(y, oriented)
        sw = sweep(s, y, direction)
        taus = thresholds if direction == "ge" else -thresholds
        order = np.argsort(taus)
        mine = {float(t): (p, r) for t, p, r in zip(sw.taus, sw.precision, sw.recall)}
        for t, p, r in zip(taus[order], precision[:-1][order], recall[:-1][order]):
            assert mine[float(t)] == pytest.approx((p, r))
        report = analyze(s, y, direction=direction)
        assert report["average_precision"] == pytest.approx(average_precision_score(y, oriented))
        assert report["auroc_of_score"] == pytest.approx(roc_auc_score(y, s))
        assert report["auroc"] == pytest.approx(roc_auc_score(y, oriented))


def test_grid_candidates_match_brute_force_on_the_same_grid():
    s, y = data(3, n=2000, levels=500)
    for grid in ("quantile", "range"):
        taus = candidate_taus(s, grid, n_tau=40, q_lo=0.1, q_hi=0.99, tau_start=0.0, tau_stop=1.0, tau_step=0.05)
        sw = sweep(s, y, "ge", taus)
        expected = brute_force(s, y, "ge", np.unique(taus), 0.7)
        i = best_precision_at_recall(sw, 0.7)
        assert (sw.tp[i], sw.fp[i]) == expected[2:]
    assert len(candidate_taus(s, "range", tau_start=0.0, tau_stop=1.0, tau_step=0.25)) == 5
    assert candidate_taus(s, "exact") is None


def test_auto_direction_and_inverted_warning():
    s, y = data(1)
    flipped = analyze(-s, y, direction="auto")
    assert flipped["direction"] == "le" and "< 0.5" in flipped["direction_reason"]
    assert analyze(s, y, direction="auto")["direction"] == "ge"
    wrong_way = analyze(-s, y, direction="ge")
    assert any("inverted" in w for w in wrong_way["warnings"])
    assert not analyze(s, y, direction="ge")["warnings"]


def test_report_contents():
    s, y = data(2)
    ids = [f"s{i}" for i in range(len(s))]
    r = analyze(s, y, direction="ge", recall_target=0.8, ids=ids, texts=[f"t{i}" for i in range(len(s))])
    c = r["chosen"]["confusion"]
    assert c["tp"] + c["fn"] == y.sum() and c["fp"] + c["tn"] == (y == 0).sum()
    assert r["chosen"]["recall"] >= 0.8 and r["base_rate"] == pytest.approx(y.mean())
    tau = r["chosen"]["tau"]
    for ex in r["examples"]["flagged_wrong"]:
        i = ids.index(ex["id"])
        assert s[i] >= tau and y[i] == 1 and ex["text"] == f"t{i}"
    assert all(len(v) <= 5 for v in r["examples"].values())
    assert sum(row["chosen"] for row in r["sweep"]) == 1
    f1s = [2 * p * q / (p + q) for p, q in zip(sweep(s, y, "ge").precision, sweep(s, y, "ge").recall) if p + q > 0]
    assert r["best_f1"]["f1"] == pytest.approx(max(f1s))
    pos, neg = s[y == 1], s[y == 0]
    pooled = np.sqrt(((len(pos) - 1) * pos.var(ddof=1) + (len(neg) - 1) * neg.var(ddof=1)) / (len(s) - 2))
    assert r["cohens_d"] == pytest.approx((pos.mean() - neg.mean()) / pooled)
    assert cohens_d(np.array([1.0]), neg) is None


def test_single_class_still_sweeps():
    s = np.linspace(0, 1, 20)
    r = analyze(s, np.zeros(20, dtype=int), direction="auto")
    assert r["auroc"] is None and r["average_precision"] is None and r["chosen"] is None
    assert r["direction"] == "ge" and any("one class" in w for w in r["warnings"])
    assert len(r["sweep"]) > 0
    r1 = analyze(s, np.ones(20, dtype=int), direction="ge", recall_target=1.0)
    assert r1["chosen"]["recall"] == 1.0 and r1["auroc"] is None


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_bad_recall_target(target):
    with pytest.raises(UsageError, match="recall-target"):
        analyze(np.array([0.1, 0.2]), np.array([0, 1]), recall_target=target)
