"""Thresholds whose promise holds on the next samples, with probability at least C.

Two promises, each an exact binomial test at every candidate τ (a Clopper–Pearson bound),
with the search over candidates accounted for:

- recall: flag a sample when its score is past τ; recall(τ) >= target. Recall only falls
  as τ gets stricter, so the candidates are tested in that order, from the τ that flags
  most, and the search stops at the first that fails (fixed-sequence testing, as in
  Learn-then-Test): each test runs at level 1 - C and the family still errs with
  probability at most 1 - C.
- accepted accuracy: accept (run unreviewed) a sample whose score is on the trusted side
  of τ; accuracy among accepted >= target. That is not monotone in τ, so an order fixed
  from the tested data itself would not be safe: one seeded half of the samples orders the
  candidates, the other tests them in that order (fixed-sequence again). Splitting beats
  spreading the level over a fixed grid (Bonferroni) wherever data is scarce: measured
  on simulated worlds, it certified 2x the coverage at 500 samples and a 0.97 target.

Both assume the samples to come are exchangeable with these (drawn alike from the same
distribution). Samples that share a group (a prompt) are not independent: when any group
holds several, the tests use one seeded sample per group.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from cdt.bootstrap import codes_of
from cdt.errors import UsageError

ASSUMES = ("the samples to come are exchangeable with these (drawn alike, from the same prompts' "
           "distribution and the same model and sampler)")
RECALL_METHOD = ("exact binomial (Clopper–Pearson) bound on recall at each τ, tested from the τ that flags most "
                 "toward stricter ones and stopping at the first failure (fixed-sequence, as Learn-then-Test)")
ACCURACY_METHOD = ("exact binomial (Clopper–Pearson) test of accepted accuracy at each τ; one seeded half of the "
                   "samples orders the candidates (surest first), the other half tests them in that order and stops "
                   "at the first failure (fixed-sequence, as Learn-then-Test)")


def p_value(k, n, target):
    """P(Binomial(n, target) >= k): how surprising k successes of n are if the true rate were `target`.
    1 where n = 0 (nothing observed proves nothing)."""
    k, n = np.asarray(k), np.asarray(n)
    return np.where(n > 0, stats.binom.sf(k - 1, np.maximum(n, 1), target), 1.0)


def lower_bound(k, n, confidence: float):
    """One-sided Clopper–Pearson lower bound on a rate with k successes of n, at `confidence`."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    safe = np.maximum(k, 1)
    return np.where((k > 0) & (n > 0), stats.beta.ppf(1.0 - confidence, safe, np.maximum(n - k + 1, 1)), 0.0)


def interval(k: int, n: int, confidence: float) -> list[float] | None:
    """Two-sided Clopper–Pearson interval on a rate, at `confidence`; None when n = 0."""
    if n <= 0:
        return None
    a = (1.0 - confidence) / 2.0
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1.0 - a, k + 1, n - k))
    return [lo, hi]


def needed(target: float, alpha: float) -> int | None:
    """The fewest samples, all of them successes, whose test can reach `target` at level `alpha`
    (target**n <= alpha); None when no number can (target 1)."""
    if target >= 1.0:
        return None
    return max(1, math.ceil(math.log(alpha) / math.log(target) - 1e-12))


def units(groups, seed: int) -> tuple[np.ndarray | None, str]:
    """Rows the tests count (None = all) and why: one seeded row per group when any group holds several."""
    codes, n_groups = codes_of(groups)
    if codes is None:
        return None, "no groups in the scores: each sample is taken as independent"
    sizes = np.bincount(codes, minlength=n_groups)
    if sizes.max() <= 1:
        return None, "every group holds one sample, so samples are independent units"
    rng = np.random.default_rng([seed, 0x6A0])
    order = rng.permutation(len(codes))
    _, first = np.unique(codes[order], return_index=True)  # a random member of each group
    return np.sort(order[first]), (f"{n_groups:,} groups hold {len(codes):,} samples (up to {sizes.max()} each); "
                                   "samples of one group are not independent, so the tests use one seeded sample "
                                   "per group")


def certified_recall(tp: np.ndarray, n_pos: int, target: float, confidence: float, flags_most_first: np.ndarray):
    """Boolean mask over candidates: recall >= target is certified. `flags_most_first` orders the
    candidates from the one that flags most; the first failure ends the sequence."""
    ok = p_value(tp, np.full_like(tp, n_pos), target) <= 1.0 - confidence
    passed = np.zeros(len(tp), dtype=bool)
    for i in flags_most_first:
        if not ok[i]:
            break
        passed[i] = True
    return passed


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit indices cut in two seeded halves: (the half that orders the candidates, the half that tests)."""
    order = np.random.default_rng([seed, 0xACC]).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def certified_accuracy(scores: np.ndarray, labels: np.ndarray, direction: str, target: float, confidence: float,
                       seed: int, fixed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(candidate τ, mask of those whose accepted accuracy >= target is certified, (samples, right samples) in
    the testing half).

    Accepted accuracy is not monotone in τ, so no order of the candidates is safe to fix from the data
    being tested. One seeded half of the samples (units) orders them, by its own lower bound, highest
    first; the other half tests them in that order at level 1 - C, stopping at the first failure. The
    candidates are the ordering half's distinct scores, or the fixed grid `fixed`."""
    first, second = split(len(scores), seed)
    taus = np.unique(scores[first]) if fixed is None else np.unique(np.asarray(fixed, dtype=np.float64))
    accepted, right = accepted_counts(scores[first], labels[first], taus, direction)
    order = np.lexsort((-accepted, -lower_bound(right, accepted, confidence)))  # surest first, then the larger
    accepted, right = accepted_counts(scores[second], labels[second], taus, direction)
    ok = p_value(right, accepted, target) <= 1.0 - confidence
    passed = np.zeros(len(taus), dtype=bool)
    for i in order:
        if not ok[i]:
            break
        passed[i] = True
    return taus, passed, (len(second), int((labels[second] == 0).sum()))


def accepted_counts(scores: np.ndarray, labels: np.ndarray, taus: np.ndarray, direction: str):
    """(accepted, accepted and right) at each τ: accepted = not flagged (score < τ for ge, > τ for le)."""
    right = np.sort(scores[labels == 0])
    everything = np.sort(scores)
    if direction == "ge":
        return np.searchsorted(everything, taus, side="left"), np.searchsorted(right, taus, side="left")
    return (len(everything) - np.searchsorted(everything, taus, side="right"),
            len(right) - np.searchsorted(right, taus, side="right"))


def recall_status(certified: bool, wrong_units: int, target: float, confidence: float) -> tuple[str, str | None]:
    """(status, the line that explains a promise not made): certified, too little data, or no candidate."""
    least = needed(target, 1.0 - confidence)
    if certified:
        return "certified", None
    if least is None:
        return "too little data", "recall 1 cannot be promised from any finite sample"
    if wrong_units < least:
        return "too little data", (f"too little data for the guarantee: recall >= {target} with probability >= "
                                   f"{confidence} needs at least {least} wrong samples (independent units), and there "
                                   f"are {wrong_units}")
    return "no candidate", (f"no candidate τ certifies recall >= {target}; widen the grid (--grid exact tries "
                            "every score)")


def acceptance(scores, labels, unit_scores, unit_labels, direction: str, target: float, confidence: float,
                seed: int, fixed) -> dict:
    """The largest set to accept unreviewed (score on the trusted side of τ) whose accuracy is >= target:
    certified with probability >= confidence (`certified_accuracy`), or (confidence 0) on these
    samples."""
    if not 0.0 < target <= 1.0:
        raise UsageError(f"--accuracy-target must be in (0, 1], got {target}")
    if confidence:
        taus, ok, tested = certified_accuracy(unit_scores, unit_labels, direction, target, confidence, seed,
                                                        fixed)
    else:
        taus = np.unique(scores if fixed is None else np.asarray(fixed, dtype=np.float64))
    accepted, right = accepted_counts(scores, labels, taus, direction)
    if not confidence:
        ok = right >= target * accepted - 1e-9 * accepted
    ok &= accepted > 0
    rule = "score < τ" if direction == "ge" else "score > τ"
    doc = {"target": target, "confidence": confidence, "accept_rule": f"accept a sample unreviewed when {rule}",
           "method": ACCURACY_METHOD if confidence else "in-sample: the largest accepted set whose accuracy on "
                                                        "these samples reaches the target",
           "candidates": int(len(taus)), "tau": None, "accepted": 0, "coverage": 0.0, "coverage_interval": None,
           "accuracy": None}
    if ok.any():
        most = np.where(ok, accepted, -1)
        top = np.flatnonzero(most == most.max())
        i = int(top[0] if direction == "ge" else top[-1])  # equal sets: the stricter τ
        u_accepted, _ = accepted_counts(unit_scores, unit_labels, taus[i : i + 1], direction)
        doc.update(tau=float(taus[i]), accepted=int(accepted[i]), coverage=float(accepted[i] / len(scores)),
                   coverage_interval=interval(int(u_accepted[0]), len(unit_scores), confidence or 0.95),
                   accuracy=float(right[i] / accepted[i]))
        return doc | {"status": "certified", "explanation": None}
    if not confidence:
        return doc | {"status": "none", "explanation": f"no set of these samples has accuracy >= {target}"}
    least = needed(target, 1.0 - confidence)
    why = (f" at confidence {confidence}: even with none wrong, that needs at least {least} accepted samples in "
           f"the testing half (about {2 * least} independent units at one τ); the half holds {tested[0]}, "
           f"{tested[1]} of them right")
    return doc | {"status": "too little data", "accepted_needed": least,
                  "explanation": f"no set of samples can be accepted with accuracy >= {target}{why}"}
