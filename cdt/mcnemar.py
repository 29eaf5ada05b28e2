"""Paired comparison of two settings graded on the same held-out rows.

`cdt eval` runs every policy on the same rows with the same random streams, so two
settings can be compared row by row. Only the discordant rows, where exactly one of the
two is right, say which is better. McNemar's exact test asks whether they split 50/50
(a binomial test on the wins). The interval is exact too: Clopper-Pearson for the
share of wins among the discordant rows, turned into points of exact match with the
discordant count held fixed, so it excludes 0 exactly when p < 0.05. scipy (which
scikit-learn already installs) does the binomial arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest


@dataclass
class Paired:
    """`a` against `b` on the same n rows; `a` is the one with more rows right (ties: the earlier)."""

    a: str  # "policy@steps"
    b: str
    equal: str  # what the two share: "passes" | "steps"
    n: int
    only_a: int  # rows a gets right and b does not
    only_b: int
    both: int
    diff: float  # exact(a) - exact(b), a share of n (>= 0)
    low: float  # 95% interval of diff
    high: float
    p_value: float  # McNemar's exact two-sided test (the binomial test of only_a among only_a + only_b)


def mcnemar(only_a: int, only_b: int, n: int) -> tuple[float, float, float]:
    """(p-value, low, high): McNemar's exact two-sided test and the 95% interval of
    (only_a - only_b) / n, conditional on the only_a + only_b discordant rows."""
    m = only_a + only_b
    if m == 0:
        return 1.0, 0.0, 0.0  # no row tells the two apart
    test = binomtest(only_a, m, 0.5)
    ci = test.proportion_ci(0.95, method="exact")
    return min(1.0, float(test.pvalue)), m * (2 * float(ci.low) - 1) / n, m * (2 * float(ci.high) - 1) / n


def compare(name_a: str, hits_a: list[bool], name_b: str, hits_b: list[bool], equal: str) -> Paired:
    if len(hits_a) != len(hits_b) or not hits_a:
        raise ValueError("paired outcomes need the same, non-empty rows")
    only_a = sum(x and not y for x, y in zip(hits_a, hits_b))
    only_b = sum(y and not x for x, y in zip(hits_a, hits_b))
    if only_b > only_a:
        return compare(name_b, hits_b, name_a, hits_a, equal)
    n = len(hits_a)
    p, low, high = mcnemar(only_a, only_b, n)
    return Paired(name_a, name_b, equal, n, only_a, only_b, sum(x and y for x, y in zip(hits_a, hits_b)),
                  (only_a - only_b) / n, low, high, p)


def equal_cost_pairs(settings: list[tuple[str, int, float, list[bool]]]) -> list[Paired]:
    """Every pair of different policies at equal steps or at equal trunk passes (within 5%: a reused pass
    or a schedule that finishes early, `power:P`, makes a setting's mean passes fractional).
    settings: (policy, steps, passes, per-row exact) in the order they were run."""
    out = []
    for i, (pa, sa, ca, ha) in enumerate(settings):
        for pb, sb, cb, hb in settings[i + 1:]:
            if pa == pb:
                continue
            equal = "steps" if sa == sb else "passes" if abs(ca - cb) <= 0.05 * max(ca, cb) else None
            if equal:
                out.append(compare(f"{pa}@{sa}", ha, f"{pb}@{sb}", hb, equal))
    return sorted(out, key=lambda p: p.equal != "passes")  # equal passes first, each group in run order
