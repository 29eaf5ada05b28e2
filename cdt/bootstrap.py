"""Seeded bootstrap intervals, resampling whole groups, and the weighted metrics they need.

Samples that share a prompt are not independent, so a replicate draws *groups* with
replacement (a cluster bootstrap) and gives each row its group's draw count as a weight;
every metric here takes those weights. With one row per group this is the ordinary
bootstrap. Intervals are percentile intervals of the replicates.

The ranking metrics work on ranks (ties share a rank) and reproduce scikit-learn's
`roc_auc_score` (ties count half) and `average_precision_score` with `sample_weight`,
in O(n) per replicate after one sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdt.metrics import bucket_of

ECE_BUCKETS = 10  # equal-width buckets of a per-sample probability (sweep-tau's ECE)


def codes_of(groups) -> tuple[np.ndarray, int]:
    """(group code of each row, number of groups); None = every row is its own group."""
    if groups is None:
        return None, 0
    _, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    return codes.astype(np.int64), int(codes.max()) + 1 if len(codes) else 0


def replicate_weights(codes: np.ndarray | None, n_rows: int, n_boot: int, seed: int):
    """Yield `n_boot` weight vectors (one per row): how often the row's group was drawn."""
    rng = np.random.default_rng([seed, 0xB007])
    n_groups = n_rows if codes is None else int(codes.max()) + 1
    for _ in range(n_boot):
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups)).astype(np.float64)
        yield counts if codes is None else counts[codes]


def percentile(values: list, level: float) -> list[float] | None:
    """The central `level` interval of the finite replicate values; None when fewer than half are finite
    (the statistic is mostly undefined on resamples: e.g. a class is usually absent)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) < max(2, len(values) // 2):
        return None
    a = (1.0 - level) / 2.0
    return [float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))]


def intervals(statistic, codes, n_rows: int, n_boot: int, seed: int, level: float, on_resample=None) -> dict:
    """{name: [lo, hi] or None} for each value `statistic(weights)` returns (a dict of floats or None);
    `on_resample(1)` after each replicate (a progress bar)."""
    if n_boot <= 0:
        return {}
    draws: dict[str, list] = {}
    for w in replicate_weights(codes, n_rows, n_boot, seed):
        for name, value in statistic(w).items():
            draws.setdefault(name, []).append(value)
        if on_resample:
            on_resample(1)
    return {name: percentile(values, level) for name, values in draws.items()}


@dataclass
class Ranked:
    """Scores reduced to ranks (ascending, ties share one), oriented so a higher score means wrong."""

    ranks: np.ndarray  # (n,) int64
    n_ranks: int
    labels: np.ndarray  # (n,) float64, 1 = wrong

    @classmethod
    def of(cls, scores, labels) -> "Ranked":
        values, ranks = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
        return cls(ranks.astype(np.int64), len(values), np.asarray(labels, dtype=np.float64))

    def ranking(self, w: np.ndarray) -> tuple[float | None, float | None]:
        """(AUROC, average precision) with each row weighted; (None, None) with one class.

        AUROC: P(a wrong row outranks a right one), ties half. Average precision: the sum over
        thresholds from the highest score down of (recall step) x precision."""
        pos = np.bincount(self.ranks, weights=w * self.labels, minlength=self.n_ranks)
        neg = np.bincount(self.ranks, weights=w, minlength=self.n_ranks) - pos
        p, n = pos.sum(), neg.sum()
        if p <= 0 or n <= 0:
            return None, None
        area = float((pos * (np.cumsum(neg) - 0.5 * neg)).sum() / (p * n))
        down = pos[::-1]
        tp, flagged = np.cumsum(down), np.cumsum((pos + neg)[::-1])
        step = down > 0
        return area, float((down[step] / p * tp[step] / flagged[step]).sum())

    def auroc(self, w: np.ndarray) -> float | None:
        return self.ranking(w)[0]

    def average_precision(self, w: np.ndarray) -> float | None:
        return self.ranking(w)[1]


def ece(probs: np.ndarray, labels: np.ndarray, w: np.ndarray, edges: np.ndarray) -> float | None:
    """Expected calibration error over the buckets `edges` (right-closed, as `Reliability`)."""
    total = w.sum()
    if total <= 0:
        return None
    b = bucket_of(probs, edges)
    k = len(edges) - 1
    gap = np.bincount(b, weights=w * probs, minlength=k) - np.bincount(b, weights=w * labels, minlength=k)
    return float(np.abs(gap).sum() / total)


def brier(probs: np.ndarray, labels: np.ndarray, w: np.ndarray) -> float | None:
    total = w.sum()
    return None if total <= 0 else float((w * (probs - labels) ** 2).sum() / total)
