"""Bootstrap intervals: the weighted metrics against scikit-learn, groups resampled whole, coverage."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from cdt import bootstrap
from cdt.metrics import Reliability


@pytest.mark.parametrize("seed", range(8))
def test_weighted_ranking_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 200
    s = rng.integers(0, 15, n) / 15  # many ties
    y = (rng.random(n) < 0.2 + 0.5 * s).astype(int)
    w = rng.integers(0, 4, n).astype(float)  # bootstrap-like counts, zeros included
    r = bootstrap.Ranked.of(s, y)
    assert r.auroc(w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert r.average_precision(w) == pytest.approx(average_precision_score(y, s, sample_weight=w), abs=1e-12)
    assert r.auroc(np.where(y == 1, 0.0, 1.0)) is None  # no weight on the wrong class


@pytest.mark.parametrize("seed", range(4))
def test_weighted_ece_and_brier_equal_repeated_rows(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(300)
    y = (rng.random(300) < p ** 2).astype(float)
    w = rng.integers(0, 3, 300)
    rel = Reliability(20)
    rel.add(np.repeat(p, w), np.repeat(y, w))
    report = rel.report()
    edges = np.linspace(0, 1, 21)
    assert bootstrap.ece(p, y, w.astype(float), edges) == pytest.approx(report.ece, abs=1e-12)
    assert bootstrap.brier(p, y, w.astype(float)) == pytest.approx(report.brier, abs=1e-12)


def test_replicates_draw_whole_groups_and_are_seeded():
    codes = np.repeat(np.arange(10), 3)
    reps = list(bootstrap.replicate_weights(codes, 30, 20, seed=5))
    for w in reps:
        assert w.sum() == 30 and all(len(set(w[codes == g])) == 1 for g in range(10))  # a group's rows move together
    again = list(bootstrap.replicate_weights(codes, 30, 20, seed=5))
    assert all(np.array_equal(a, b) for a, b in zip(reps, again))
    assert not np.array_equal(reps[0], next(bootstrap.replicate_weights(codes, 30, 1, seed=6)))


def test_copies_of_one_sample_widen_the_interval_only_when_grouped():
    """Five exact copies of each sample carry the information of one: resampling rows understates the
    uncertainty by about sqrt(5); resampling groups does not."""
    rng = np.random.default_rng(0)
    s = rng.random(80)
    y = (rng.random(80) < s).astype(int)
    rows, labels = np.repeat(s, 5), np.repeat(y, 5)
    ranked = bootstrap.Ranked.of(rows, labels)
    codes, k = bootstrap.codes_of(np.repeat(np.arange(80), 5).tolist())
    assert k == 80

    def width(c):
        lo, hi = bootstrap.intervals(lambda w: {"a": ranked.auroc(w)}, c, 400, 400, 0, 0.9)["a"]
        return hi - lo

    single = bootstrap.Ranked.of(s, y)
    one = bootstrap.intervals(lambda w: {"a": single.auroc(w)}, None, 80, 400, 0, 0.9)["a"]
    assert width(codes) == pytest.approx(one[1] - one[0], rel=0.25)
    assert width(None) < 0.6 * width(codes)


def test_interval_covers_a_known_auroc_about_as_often_as_stated():
    """Two normal classes a distance d apart: AUROC = Phi(d / sqrt 2). The 90% interval should cover it
    in about 90% of trials; allowed: the 99.9% binomial range of 120 trials around 0.9, widened by 0.05 for
    the percentile bootstrap's known small-sample undercoverage."""
    d, n, trials, level = 1.0, 150, 120, 0.9
    truth = stats.norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(3)
    covered = 0
    for t in range(trials):
        y = (rng.random(n) < 0.4).astype(int)
        s = rng.normal(size=n) + d * y
        ranked = bootstrap.Ranked.of(s, y)
        lo, hi = bootstrap.intervals(lambda w: {"a": ranked.auroc(w)}, None, n, 300, t, level)["a"]
        covered += lo <= truth <= hi
    low = stats.binom.ppf(0.0005, trials, level) / trials - 0.05
    assert low <= covered / trials <= 1.0
    assert covered / trials <= stats.binom.ppf(0.9995, trials, level) / trials  # not vacuous: not always covered


def test_percentile_is_none_when_mostly_undefined():
    assert bootstrap.percentile([None] * 6 + [0.5] * 4, 0.9) is None
    assert bootstrap.percentile([0.1, 0.2, 0.3, 0.4], 0.5) == pytest.approx([0.175, 0.325])
