"""Threshold promises: the exact bounds against scipy, and the promise kept on fresh data in simulation.

The simulations draw calibration sets from distributions whose recall and accepted accuracy at any τ
are known in closed form, choose τ, and count the trials in which the true figure at that τ falls
short of the target. A promise made with confidence C may break in at most 1 - C of trials; the test
allows the binomial noise of a finite number of trials (the 99.9% quantile of Binomial(trials, 1 - C)),
and checks that choosing on the sample alone breaks it more often, so the test can fail.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cdt import guarantee
from cdt.thresholds import analyze


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 400), data=st.data(), target=st.floats(0.05, 0.99))
def test_p_value_and_bounds_agree_with_scipy(n, data, target):
    k = data.draw(st.integers(0, n))
    test = stats.binomtest(k, n, target, alternative="greater")
    assert guarantee.p_value(k, n, target) == pytest.approx(test.pvalue, rel=1e-9, abs=1e-12)
    for c in (0.8, 0.95):
        lo = float(guarantee.lower_bound(k, n, c))
        assert lo == pytest.approx(stats.binomtest(k, n, alternative="greater").proportion_ci(c).low, abs=1e-9)
        two = stats.binomtest(k, n).proportion_ci(c, method="exact")
        assert guarantee.interval(k, n, c) == pytest.approx([two.low, two.high], abs=1e-9)
        if abs(lo - target) > 1e-9:  # the bound and the test are one decision (duality)
            assert (lo >= target) == (guarantee.p_value(k, n, target) <= 1 - c)


def test_nothing_observed_proves_nothing():
    assert guarantee.p_value(0, 0, 0.5) == 1.0 and guarantee.lower_bound(0, 0, 0.95) == 0.0
    assert guarantee.interval(0, 0, 0.95) is None


@pytest.mark.parametrize("target,alpha", [(0.9, 0.05), (0.8, 0.1), (0.99, 0.01), (0.5, 0.05), (0.9, 0.05 / 201)])
def test_needed_is_the_smallest_count_that_can_pass(target, alpha):
    n = guarantee.needed(target, alpha)
    assert guarantee.p_value(n, n, target) <= alpha < guarantee.p_value(n - 1, n - 1, target)
    assert guarantee.needed(1.0, alpha) is None


def test_units_take_one_seeded_sample_per_group():
    groups = [i // 4 for i in range(40)]
    keep, why = guarantee.units(groups, seed=3)
    assert sorted({groups[i] for i in keep}) == list(range(10)) and len(keep) == 10 and "one seeded" in why
    assert np.array_equal(keep, guarantee.units(groups, seed=3)[0])
    assert not np.array_equal(keep, guarantee.units(groups, seed=4)[0])
    assert guarantee.units(list(range(9)), 0)[0] is None and guarantee.units(None, 0)[0] is None


# the simulations: two classes with known score distributions

WORLDS = {  # name: (wrong share, wrong scores, right scores), as frozen scipy distributions
    "issue": (0.3, stats.norm(0.62, 0.15), stats.norm(0.45, 0.15)),
    "beta": (0.15, stats.beta(4, 2), stats.beta(2, 5)),
    "rare": (0.08, stats.norm(0.7, 0.2), stats.norm(0.3, 0.2)),
}


def draw(world, n, rng):
    share, wrong, right = WORLDS[world]
    y = (rng.random(n) < share).astype(int)
    s = np.where(y == 1, wrong.rvs(n, random_state=rng), right.rvs(n, random_state=rng))
    return s, y


def true_recall(world, tau):
    return WORLDS[world][1].sf(tau)  # flag s >= τ


def true_accepted_accuracy(world, tau):
    share, wrong, right = WORLDS[world]
    right_in, wrong_in = (1 - share) * right.cdf(tau), share * wrong.cdf(tau)  # accept s < τ
    return right_in / (right_in + wrong_in)


def tolerated(trials, confidence):
    return int(stats.binom.ppf(0.999, trials, 1 - confidence))


SLOW = pytest.mark.slow  # the other worlds: the same check, run by .ci/run after the fast suite


@pytest.mark.parametrize("world,n,confidence", [("issue", 400, 0.9), pytest.param("beta", 300, 0.9, marks=SLOW),
                                                pytest.param("rare", 600, 0.8, marks=SLOW)])
def test_recall_promise_breaks_at_most_one_minus_c_of_trials(world, n, confidence):
    rng = np.random.default_rng(7)
    trials, broken, broken_in_sample = 200, 0, 0
    for _ in range(trials):
        s, y = draw(world, n, rng)
        doc = analyze(s, y, direction="ge", recall_target=0.9, confidence=confidence, examples=0)
        assert doc["guarantee"]["status"] == "certified" and doc["guarantee"]["recall_bound"] >= 0.9
        broken += true_recall(world, doc["chosen"]["tau"]) < 0.9
        broken_in_sample += true_recall(world, doc["in_sample"]["tau"]) < 0.9
    assert broken <= tolerated(trials, confidence)
    assert broken_in_sample > max(broken, trials * (1 - confidence))  # the in-sample choice does break it


@pytest.mark.parametrize("world,n,target", [pytest.param("issue", 600, 0.8, marks=SLOW), ("beta", 400, 0.95),
                                            pytest.param("rare", 500, 0.97, marks=SLOW)])
def test_accuracy_promise_breaks_at_most_one_minus_c_of_trials(world, n, target):
    rng = np.random.default_rng(11)
    trials, confidence, broken, broken_in_sample, accepted = 150, 0.9, 0, 0, []
    for _ in range(trials):
        s, y = draw(world, n, rng)
        doc = analyze(s, y, direction="ge", confidence=confidence, accuracy_target=target, examples=0)
        acc = doc["acceptance"]
        if acc["tau"] is not None:
            broken += true_accepted_accuracy(world, acc["tau"]) < target
            assert acc["coverage_interval"][0] <= acc["coverage"] <= acc["coverage_interval"][1]
            accepted.append(acc["coverage"])
        doc0 = analyze(s, y, direction="ge", confidence=0.0, accuracy_target=target, examples=0)
        broken_in_sample += true_accepted_accuracy(world, doc0["acceptance"]["tau"]) < target
    assert len(accepted) > trials // 2  # the promise is usually made, and sets are not empty
    assert broken <= tolerated(trials, confidence)
    assert broken_in_sample > max(broken, trials * (1 - confidence))


def test_the_issues_measurement_in_sample_breaks_often_guaranteed_rarely():
    """The issue's case: 400 samples, 30% wrong, N(0.62, 0.15) vs N(0.45, 0.15), target 0.9, 40 trials."""
    rng = np.random.default_rng(2026)
    breaks = {0.0: 0, 0.95: 0}
    for _ in range(40):
        s, y = draw("issue", 400, rng)
        for c in breaks:
            breaks[c] += true_recall("issue", analyze(s, y, direction="ge", confidence=c)["chosen"]["tau"]) < 0.9
    assert breaks[0.0] >= 10 and breaks[0.95] <= tolerated(40, 0.95)


def test_too_little_data_says_how_much_would_do():
    rng = np.random.default_rng(0)
    s, y = rng.random(100), np.zeros(100, int)
    y[:20] = 1
    doc = analyze(s, y, direction="ge", confidence=0.95)
    g = doc["guarantee"]
    assert g["status"] == "too little data" and g["wrong_needed"] == 29 and doc["chosen"] is None
    assert "at least 29 wrong samples" in g["explanation"] and doc["in_sample"] is not None
    assert any("29 wrong samples" in w for w in doc["warnings"])
    y[:29] = 1  # 29 wrong: flagging everything is certified
    assert analyze(s, y, direction="ge", confidence=0.95)["guarantee"]["status"] == "certified"


def test_groups_count_once_each():
    """Five copies of each sample: the guarantee counts 40 units, not 200 rows, and may not be certified."""
    rng = np.random.default_rng(1)
    s, y = draw("issue", 40, rng)
    rows, labels, groups = np.repeat(s, 5), np.repeat(y, 5), np.repeat(np.arange(40), 5)
    g = analyze(rows, labels, direction="ge", confidence=0.95, groups=groups.tolist())["guarantee"]
    assert g["n_units"] == 40 and g["wrong_units"] == y.sum() and "one seeded sample per group" in g["units"]
    ungrouped = analyze(rows, labels, direction="ge", confidence=0.95)["guarantee"]
    assert ungrouped["n_units"] == 200 and ungrouped["wrong_units"] == 5 * y.sum()


def test_acceptance_is_certified_on_any_scale_and_with_a_fixed_grid():
    rng = np.random.default_rng(4)
    s, y = draw("rare", 800, rng)
    shifted = analyze(100 * s - 40, y, direction="ge", confidence=0.9, accuracy_target=0.95)["acceptance"]
    plain = analyze(s, y, direction="ge", confidence=0.9, accuracy_target=0.95)["acceptance"]
    assert shifted["status"] == plain["status"] == "certified"
    assert shifted["tau"] == pytest.approx(100 * plain["tau"] - 40) and shifted["accepted"] == plain["accepted"]
    grid = analyze(s, y, direction="ge", confidence=0.9, accuracy_target=0.95, fixed_taus=np.linspace(0, 1, 21))
    assert grid["acceptance"]["candidates"] == 21 and round(grid["acceptance"]["tau"] * 20, 9) % 1 == 0


def test_acceptance_with_too_little_data_says_so():
    rng = np.random.default_rng(5)
    s, y = draw("issue", 30, rng)
    acc = analyze(s, y, direction="ge", confidence=0.95, accuracy_target=0.99)["acceptance"]
    assert acc["status"] == "too little data" and acc["tau"] is None and acc["accepted_needed"] == 299
    assert "299 accepted samples" in acc["explanation"]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(30, 160), target=st.sampled_from([0.5, 0.8, 0.9]),
       confidence=st.sampled_from([0.8, 0.95]), direction=st.sampled_from(["ge", "le"]))
def test_a_certified_tau_is_feasible_bounded_and_never_beats_the_in_sample_optimum(data, n, target, confidence,
                                                                                   direction):
    """Whatever the scores: a certified τ's recall bound reaches the target and is the Clopper–Pearson bound
    of its own counts; every candidate that flags more is certified too (the tested prefix); the in-sample
    choice, free of the promise, is at least as precise."""
    levels = data.draw(st.integers(2, 12))
    s = np.asarray(data.draw(st.lists(st.integers(0, levels), min_size=n, max_size=n)), float) / levels
    y = np.asarray(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    doc = analyze(s, y, direction=direction, recall_target=target, confidence=confidence, examples=0)
    g, c = doc["guarantee"], doc["chosen"]
    if g["status"] != "certified":
        assert c is None and g["explanation"]
        return
    k, wrong = c["confusion"]["tp"], int(y.sum())
    assert g["recall_bound"] == pytest.approx(float(guarantee.lower_bound(k, wrong, confidence)))
    assert g["recall_bound"] >= target and c["recall"] >= target
    looser = s[y == 1] >= c["tau"] if direction == "ge" else s[y == 1] <= c["tau"]
    assert looser.sum() == k
    for tau in np.unique(s):  # every τ that flags at least as much is certified as well
        flags = (s[y == 1] >= tau) if direction == "ge" else (s[y == 1] <= tau)
        if flags.sum() >= k:
            assert guarantee.p_value(flags.sum(), wrong, target) <= 1 - confidence
    assert doc["in_sample"]["precision"] >= c["precision"] - 1e-12
