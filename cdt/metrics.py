"""Metrics of the critic's judgement (scikit-learn where it has the estimator).

`Reliability` accumulates (critic probability, token is wrong) pairs in constant memory:
exact sums for uniform buckets and the Brier score, plus a fine histogram (2^16 bins)
from which quantile buckets, AUROC/AP and percentiles are computed. Two probabilities
closer than 1/65536 may share a fine bin and then count as tied; nothing else is approximate.
Buckets are right-closed like scikit-learn's `calibration_curve`: (lo, hi], the first [0, hi].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from cdt.settings import BINNINGS

FINE_BINS = 1 << 16


def _ranking(metric, scores, labels, weights) -> float | None:
    """A scikit-learn ranking metric with label 1 = wrong; None when only one class carries weight."""
    labels = np.asarray(labels)
    present = labels if weights is None else labels[np.asarray(weights) > 0]
    if present.size == 0 or present.min() == present.max():
        return None
    return float(metric(labels, np.asarray(scores), sample_weight=weights))


def auroc(scores, labels, weights=None) -> float | None:
    """Area under the ROC curve with label 1 = wrong; None when only one class is present."""
    return _ranking(roc_auc_score, scores, labels, weights)


def average_precision(scores, labels, weights=None) -> float | None:
    """Average precision with label 1 = wrong; None when only one class is present."""
    return _ranking(average_precision_score, scores, labels, weights)


def bucket_of(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Right-closed bucket index of each probability (scikit-learn's rule)."""
    return np.searchsorted(edges[1:-1], p, side="left")


@dataclass
class Bucket:
    lo: float
    hi: float
    count: int
    mean_prob: float | None  # mean critic P(wrong) in the bucket
    error_rate: float | None  # share of its tokens that are wrong


@dataclass
class ReliabilityReport:
    binning: str
    buckets: list[Bucket]
    n: int
    n_wrong: int
    ece: float | None
    mce: float | None
    brier: float | None
    auroc: float | None
    average_precision: float | None
    accuracy: float | None  # share of tokens that are right
    wrong: dict  # critic probability mean/p10/p50/p90 over wrong tokens
    right: dict  # ... over right tokens


class Reliability:
    """Streaming reliability statistics of critic probabilities against wrong/right labels."""

    def __init__(self, buckets: int = 20):
        if buckets < 1:
            raise ValueError("buckets must be at least 1")
        self.edges = np.linspace(0.0, 1.0, buckets + 1)
        self.count = np.zeros(buckets, np.int64)
        self.wrong = np.zeros(buckets, np.int64)
        self.psum = np.zeros(buckets, np.float64)
        self.fine = np.zeros((2, FINE_BINS), np.int64)  # [right, wrong] counts per fine bin
        self.fine_psum = np.zeros((2, FINE_BINS), np.float64)
        self.sq_err = 0.0  # sum of (p - y)^2

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def add(self, probs, wrong) -> None:
        p = np.asarray(probs, dtype=np.float64).ravel()
        y = np.asarray(wrong).ravel().astype(bool)
        if p.size == 0:
            return
        if not np.all((p >= 0) & (p <= 1)):
            raise ValueError("critic probabilities must lie in [0, 1]")
        b = bucket_of(p, self.edges)
        k = len(self.count)
        self.count += np.bincount(b, minlength=k)
        self.wrong += np.bincount(b[y], minlength=k)
        self.psum += np.bincount(b, weights=p, minlength=k)
        f = np.clip(np.ceil(p * FINE_BINS).astype(np.int64) - 1, 0, FINE_BINS - 1)  # right-closed fine bins
        for label in (0, 1):
            sel = y == bool(label)
            self.fine[label] += np.bincount(f[sel], minlength=FINE_BINS)
            self.fine_psum[label] += np.bincount(f[sel], weights=p[sel], minlength=FINE_BINS)
        self.sq_err += float(((p - y) ** 2).sum())

    def merge(self, other: "Reliability") -> None:
        for name in ("count", "wrong", "psum", "fine", "fine_psum"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.sq_err += other.sq_err

    # the two binnings

    def _uniform(self) -> list[Bucket]:
        return [Bucket(float(lo), float(hi), int(c), s / c if c else None, w / c if c else None)
                for lo, hi, c, w, s in zip(self.edges[:-1], self.edges[1:], self.count, self.wrong, self.psum)]

    def _quantile(self) -> list[Bucket]:
        """Buckets of equal token counts: the lower bucket holds every value up to the value at rank
        floor(q (n - 1)), which is how `np.percentile` edges split the data in `calibration_curve`."""
        n, total = self.n, self.fine.sum(0)
        if n == 0:
            return []
        cum = np.cumsum(total)
        k = len(self.count)
        cuts = [int(np.searchsorted(cum, int(np.floor(q * (n - 1))) + 1)) for q in np.linspace(0, 1, k + 1)[1:-1]]
        bounds = [-1] + cuts + [FINE_BINS - 1]
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            sl = slice(a + 1, b + 1)
            c = int(total[sl].sum())
            w = int(self.fine[1, sl].sum())
            s = float(self.fine_psum[:, sl].sum())
            out.append(Bucket((a + 1) / FINE_BINS, (b + 1) / FINE_BINS, c, s / c if c else None, w / c if c else None))
        return out

    def _class_stats(self, label: int) -> dict:
        counts = self.fine[label]
        c = int(counts.sum())
        if c == 0:
            return {"count": 0, "mean": None, "p10": None, "p50": None, "p90": None}
        cum = np.cumsum(counts)
        upper = lambda q: float((np.searchsorted(cum, q * c) + 1) / FINE_BINS)  # noqa: E731 (fine-bin upper edge)
        return {"count": c, "mean": float(self.fine_psum[label].sum() / c),
                "p10": upper(0.1), "p50": upper(0.5), "p90": upper(0.9)}

    def report(self, binning: str = "uniform") -> ReliabilityReport:
        if binning not in BINNINGS:
            raise ValueError(f"unknown binning {binning!r}; choose from {', '.join(BINNINGS)}")
        buckets = self._uniform() if binning == "uniform" else self._quantile()
        n, n_wrong = self.n, int(self.wrong.sum())
        filled = [b for b in buckets if b.count]
        gaps = [abs(b.mean_prob - b.error_rate) for b in filled]
        ece = sum(b.count / n * g for b, g in zip(filled, gaps)) if n else None
        # token-level ranking from the fine histogram: each bin is one weighted point per class
        idx = np.arange(FINE_BINS)
        scores, labels = np.concatenate([idx, idx]), np.repeat([0, 1], FINE_BINS)
        weights = self.fine.ravel()
        keep = weights > 0
        return ReliabilityReport(
            binning=binning, buckets=buckets, n=n, n_wrong=n_wrong, ece=ece, mce=max(gaps) if gaps else None,
            brier=self.sq_err / n if n else None,
            auroc=auroc(scores[keep], labels[keep], weights[keep]),
            average_precision=average_precision(scores[keep], labels[keep], weights[keep]),
            accuracy=1 - n_wrong / n if n else None,
            wrong=self._class_stats(1), right=self._class_stats(0),
        )

    def weighted_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean probability, label, count) per non-empty fine bin and class: input for fitting a map."""
        keep = self.fine > 0
        mean = np.divide(self.fine_psum, np.maximum(self.fine, 1))
        labels = np.broadcast_to(np.array([[0], [1]]), self.fine.shape)
        return mean[keep], labels[keep], self.fine[keep]


def frame_stats(probs, wrong) -> dict:
    """Exact statistics of one frame's judged tokens: counts, AUROC, P(wrong) mean/p10/p90 per class."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(wrong).astype(bool)

    def describe(values):
        if values.size == 0:
            return {"count": 0, "mean": None, "p10": None, "p90": None}
        return {"count": int(values.size), "mean": float(values.mean()),
                "p10": float(np.quantile(values, 0.1)), "p90": float(np.quantile(values, 0.9))}

    return {"valid": int(p.size), "right": int((~y).sum()), "wrong": int(y.sum()), "auroc": auroc(p, y),
            "p_wrong": describe(p[y]), "p_right": describe(p[~y])}


def pairwise_accuracy(v_right, v_wrong) -> float | None:
    """Share of (right, wrong) pairs in which the right answer has the higher value (ties count half)."""
    r, w = np.asarray(v_right, dtype=np.float64), np.asarray(v_wrong, dtype=np.float64)
    if r.size == 0:
        return None
    return float(((r > w) + 0.5 * (r == w)).mean())
