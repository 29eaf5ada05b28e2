"""Streaming reliability statistics against scikit-learn on the same inputs."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from cdt.metrics import FINE_BINS, Reliability


def tokens(seed, n=999):
    """Probabilities on a 0.001 grid (distinct values never share a fine bin), labels drawn from them."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 1001, n) / 1000
    y = (rng.random(n) < p ** 1.5).astype(int)
    return p, y


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("binning, buckets", [("uniform", 20), ("uniform", 7), ("quantile", 10), ("quantile", 6)])
def test_buckets_match_sklearn_calibration_curve(seed, binning, buckets):
    p, y = tokens(seed)
    r = Reliability(buckets)
    for lo in range(0, len(p), 100):  # streamed in chunks
        r.add(p[lo : lo + 100], y[lo : lo + 100])
    report = r.report(binning)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=buckets, strategy=binning)
    filled = [b for b in report.buckets if b.count]
    assert len(filled) == len(prob_true)
    assert [b.error_rate for b in filled] == pytest.approx(prob_true.tolist())
    assert [b.mean_prob for b in filled] == pytest.approx(prob_pred.tolist())
    counts = np.array([b.count for b in filled])
    expected_ece = float((counts / len(p) * np.abs(prob_pred - prob_true)).sum())
    assert report.ece == pytest.approx(expected_ece)
    assert report.mce == pytest.approx(float(np.abs(prob_pred - prob_true).max()))


def test_ranking_brier_and_class_stats_match_sklearn():
    p, y = tokens(11, n=5000)
    r = Reliability(20)
    r.add(p, y)
    rep = r.report()
    assert rep.auroc == pytest.approx(roc_auc_score(y, p))
    assert rep.average_precision == pytest.approx(average_precision_score(y, p))
    assert rep.brier == pytest.approx(brier_score_loss(y, p))
    assert rep.accuracy == pytest.approx(1 - y.mean()) and rep.n == 5000 and rep.n_wrong == y.sum()
    assert rep.wrong["mean"] == pytest.approx(p[y == 1].mean())
    for q in ("p10", "p50", "p90"):  # percentiles to fine-bin resolution
        assert abs(rep.right[q] - np.quantile(p[y == 0], int(q[1:]) / 100)) <= 1.5e-3


def test_streaming_equals_one_shot_and_merge():
    p, y = tokens(3)
    one, parts, merged = Reliability(10), Reliability(10), Reliability(10)
    one.add(p, y)
    for lo in range(0, len(p), 37):
        parts.add(p[lo : lo + 37], y[lo : lo + 37])
    a, b = Reliability(10), Reliability(10)
    a.add(p[:500], y[:500]), b.add(p[500:], y[500:])
    merged.merge(a), merged.merge(b)
    for r in (parts, merged):
        assert r.report("quantile") == one.report("quantile")
        assert r.report("uniform").ece == pytest.approx(one.report("uniform").ece)


def test_memory_is_constant_in_the_number_of_tokens():
    r = Reliability(20)
    size = sum(a.nbytes for a in (r.count, r.wrong, r.psum, r.fine, r.fine_psum))
    rng = np.random.default_rng(0)
    for _ in range(20):
        r.add(rng.random(10_000), rng.random(10_000) < 0.2)
    assert sum(a.nbytes for a in (r.count, r.wrong, r.psum, r.fine, r.fine_psum)) == size
    assert r.n == 200_000 and r.fine.shape == (2, FINE_BINS)


def test_edges_are_right_closed_and_single_class_is_undefined():
    r = Reliability(4)
    r.add(np.array([0.0, 0.25, 0.2500001, 1.0]), np.array([0, 0, 0, 0]))
    assert [b.count for b in r.report().buckets] == [2, 1, 0, 1]
    rep = r.report()
    assert rep.auroc is None and rep.average_precision is None and rep.wrong["mean"] is None
    with pytest.raises(ValueError):
        r.add(np.array([1.5]), np.array([1]))
