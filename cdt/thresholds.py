"""Pass 2 of calibration: sweep a flagging threshold τ over stored per-sample scores.

Pure numpy (plus scikit-learn for AUROC/AP); the model is never loaded. A sample is
*flagged* when `score >= τ` (direction `ge`) or `score <= τ` (direction `le`); label 1
means the sample is wrong, so a flagged wrong sample is a true positive.

Exact mode evaluates every distinct score as τ: one sort gives the distinct values and
how many samples reach each, a histogram of the wrong samples over those values gives
the true positives; O(n log n). Grid modes count by binary search, O((n + m) log n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

from cdt import bootstrap as bootstrap_
from cdt import guarantee
from cdt.errors import UsageError
from cdt.guarantee import ASSUMES, RECALL_METHOD
from cdt.metrics import auroc
from cdt.settings import DIRECTIONS, MAX_TAUS, SweepSettings, tau_range_count

TIE_BREAK = "highest precision with recall >= target; then highest recall; then the stricter τ"


@dataclass
class SweepReport:
    doc: dict  # the report, as written
    path: Path  # where it was written

    def to_json(self) -> dict:
        return self.doc | {"report_path": str(self.path)}

    @property
    def unmet(self) -> list[str]:
        """Why a promise asked for could not be made (what `--strict` exits 1 on)."""
        asked = [self.doc.get("guarantee"), self.doc.get("acceptance")]
        return [p["explanation"] for p in asked if p and p["status"] != "certified"]


def sweep_tau(source: str, cfg: SweepSettings, on_resample=None) -> SweepReport:
    """Read a scores file ('-' = stdin), sweep τ, write the report under `cfg.out_dir` (never over an
    earlier one) and return it."""
    from cdt.rundir import check_output
    from cdt.scores import read_scores, write_report

    cfg.validate()
    check_output(cfg.out_dir, "--out-dir", directory=True)
    grid = cfg.chosen_grid
    data = read_scores(source, cfg.score_key, cfg.label_key)
    taus = candidate_taus(data.scores, grid, cfg.n_tau, cfg.q_lo, cfg.q_hi, cfg.tau_start, cfg.tau_stop, cfg.tau_step)
    doc = analyze(data.scores, data.labels, direction=cfg.direction, recall_target=cfg.recall_target, taus=taus,
                  ids=data.ids, texts=data.texts, examples=cfg.examples, confidence=cfg.confidence,
                  accuracy_target=cfg.accuracy_target, groups=data.groups, seed=cfg.seed, bootstrap=cfg.bootstrap,
                  fixed_taus=taus if grid == "range" else None, on_resample=on_resample)
    name = cfg.model or data.model or ("stdin" if source == "-" else Path(source).stem)
    doc = {"source": data.source, "model": name, "score_key": cfg.score_key, "label_key": cfg.label_key,
           "grid": grid, "tie_break": TIE_BREAK, **doc}
    return SweepReport(doc, write_report(doc, cfg.out_dir, name, doc["n"]))


@dataclass
class Sweep:
    """Confusion counts at each candidate τ (ascending τ)."""

    direction: str
    taus: np.ndarray  # (m,) float64, ascending
    tp: np.ndarray  # (m,) wrong samples flagged
    fp: np.ndarray  # (m,) right samples flagged
    n_pos: int  # wrong samples
    n_neg: int  # right samples

    @property
    def flagged(self) -> np.ndarray:
        return self.tp + self.fp

    @property
    def precision(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.flagged > 0, self.tp / np.maximum(self.flagged, 1), np.nan)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / self.n_pos if self.n_pos else np.full(len(self.taus), np.nan)

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / self.n_neg if self.n_neg else np.full(len(self.taus), np.nan)

    @property
    def f1(self) -> np.ndarray:
        denom = 2 * self.tp + self.fp + (self.n_pos - self.tp)
        return np.where(denom > 0, 2 * self.tp / np.maximum(denom, 1), np.nan)


def _count_flagged(sorted_scores: np.ndarray, taus: np.ndarray, direction: str) -> np.ndarray:
    """How many of `sorted_scores` (ascending) are flagged at each τ."""
    if direction == "ge":
        return len(sorted_scores) - np.searchsorted(sorted_scores, taus, side="left")
    return np.searchsorted(sorted_scores, taus, side="right")


def sweep(scores: np.ndarray, labels: np.ndarray, direction: str, taus: np.ndarray | None = None) -> Sweep:
    """Counts at every distinct score (taus=None) or at the given τ values."""
    if direction not in ("ge", "le"):
        raise ValueError(f"direction must be ge or le, not {direction!r}")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    everything = np.sort(scores)
    wrong = np.sort(np.compress(labels, scores))  # compress: ~3x faster than boolean indexing
    if taus is None:  # every distinct score: counts from where each value starts, and a histogram of the wrong
        first = np.empty(len(everything), dtype=bool)
        first[:1] = True
        np.not_equal(everything[1:], everything[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        taus = everything[starts]
        per_tau = np.bincount(np.searchsorted(taus, wrong), minlength=len(taus))  # sorted needles: fast
        if direction == "ge":
            flagged = len(everything) - starts
            tp = np.cumsum(per_tau[::-1])[::-1]
        else:
            flagged = np.append(starts[1:], len(everything))
            tp = np.cumsum(per_tau)
    else:
        taus = np.unique(np.asarray(taus, dtype=np.float64))
        flagged = _count_flagged(everything, taus, direction)
        tp = _count_flagged(wrong, taus, direction)
    return Sweep(direction, taus, tp.astype(np.int64), (flagged - tp).astype(np.int64), len(wrong),
                 len(scores) - len(wrong))


def best_precision_at_recall(s: Sweep, recall_target: float) -> int | None:
    """Index of the τ with the highest precision among those with recall >= target.

    Tie-break: higher recall, then the stricter τ (the largest for `ge`, the smallest for
    `le`; only grid candidates can tie on both, since distinct scores give distinct sets).
    None when no τ reaches the target (or there is no wrong sample).
    """
    if s.n_pos == 0:
        return None
    ok = (s.tp >= recall_target * s.n_pos - 1e-9 * s.n_pos) & (s.flagged > 0)
    if not ok.any():
        return None
    return _best(s, np.where(ok, s.precision, -np.inf), np.where(ok, s.recall, -np.inf))


def _best(s: Sweep, primary: np.ndarray, secondary: np.ndarray | None = None) -> int:
    """Argmax of `primary`, ties to the larger `secondary`, then to the stricter τ; O(m), no sort."""
    cand = np.flatnonzero(primary == primary.max())
    if secondary is not None and len(cand) > 1:
        sec = secondary[cand]
        cand = cand[sec == sec.max()]
    return int(cand[-1] if s.direction == "ge" else cand[0])  # taus ascend: last = largest


def _argmax_strict(values: np.ndarray, s: Sweep) -> int | None:
    """The index of the largest finite value; ties go to the stricter τ."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    return _best(s, np.where(finite, values, -np.inf))


def candidate_taus(scores: np.ndarray, grid: str, n_tau: int = 40, q_lo: float = 0.6, q_hi: float = 0.99,
                   tau_start: float | None = None, tau_stop: float | None = None,
                   tau_step: float | None = None) -> np.ndarray | None:
    """None for `exact` (every distinct score); quantiles of the scores; or an arithmetic range."""
    if grid == "exact":
        return None
    if grid == "quantile":
        if not 0.0 <= q_lo <= q_hi <= 1.0 or not 1 <= n_tau <= MAX_TAUS:
            raise UsageError(f"--q-lo and --q-hi must satisfy 0 <= q-lo <= q-hi <= 1, and --n-tau be in [1, {MAX_TAUS}]")
        return np.quantile(scores, np.linspace(q_lo, q_hi, n_tau))
    if grid == "range":
        return tau_start + tau_step * np.arange(tau_range_count(tau_start, tau_stop, tau_step))
    raise UsageError(f"unknown grid {grid!r}; choose from exact, quantile, range")


def choose_direction(scores: np.ndarray, labels: np.ndarray, direction: str) -> tuple[str, str]:
    """(direction, why). `auto` picks `ge` when wrong samples score higher (AUROC >= 0.5)."""
    if direction not in DIRECTIONS:
        raise UsageError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")
    if direction != "auto":
        return direction, "given"
    a = auroc(scores, labels)
    if a is None:
        return "ge", "auto: AUROC is undefined with one class; defaulting to ge"
    if a >= 0.5:
        return "ge", f"auto: AUROC of the score is {a:.3f} >= 0.5, so wrong samples score higher: flag score >= τ"
    return "le", f"auto: AUROC of the score is {a:.3f} < 0.5, so wrong samples score lower: flag score <= τ"


def _point(s: Sweep, i: int | None) -> dict | None:
    if i is None:
        return None
    tp, fp = int(s.tp[i]), int(s.fp[i])
    fn, tn = s.n_pos - tp, s.n_neg - fp

    def num(x):
        x = float(x)
        return None if math.isnan(x) else x

    return {"tau": float(s.taus[i]), "precision": num(s.precision[i]), "recall": num(s.recall[i]),
            "f1": num(s.f1[i]), "fpr": num(s.fpr[i]), "flagged": tp + fp,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}


def cohens_d(a: np.ndarray, b: np.ndarray) -> float | None:
    """(mean a - mean b) / pooled standard deviation; None when undefined."""
    if len(a) < 2 or len(b) < 2:
        return None
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return None if pooled <= 0 else float((a.mean() - b.mean()) / math.sqrt(pooled))


def _table(s: Sweep, chosen: int | None, in_sample: int | None = None, bounds=None, rows: int = 12) -> list[dict]:
    """A compact view of the sweep: evenly spaced candidates plus the chosen and the in-sample ones, each
    with its certified recall bound when there is a guarantee."""
    m = len(s.taus)
    picks = set(np.linspace(0, m - 1, num=min(rows, m)).round().astype(int).tolist())
    picks |= {i for i in (chosen, in_sample) if i is not None}
    return [_point(s, i) | {"chosen": i == chosen, "in_sample": i == in_sample}
            | ({} if bounds is None else {"recall_bound": float(bounds[i])}) for i in sorted(picks)]


def analyze(scores, labels, *, direction: str = "auto", recall_target: float = 0.9, taus=None,
            ids=None, texts=None, examples: int = 5, confidence: float = 0.0, accuracy_target: float | None = None,
            groups=None, seed: int = 0, bootstrap: int = 0, fixed_taus=None, on_resample=None) -> dict:
    """The whole threshold report as a JSON-ready dict (no file I/O).

    `confidence` C > 0 chooses τ so that recall >= target holds on new samples with probability >= C
    (`cdt.guarantee`); 0 chooses on these samples alone. `accuracy_target` adds the acceptance promise,
    over `fixed_taus` when given (a --tau-* grid). `bootstrap` > 0 adds intervals."""
    if not 0.0 < recall_target <= 1.0:
        raise UsageError(f"--recall-target must be in (0, 1], got {recall_target}")
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(scores) == 0:
        raise UsageError("no samples to sweep")
    chosen_dir, why = choose_direction(scores, labels, direction)
    s = sweep(scores, labels, chosen_dir, taus)
    oriented = scores if chosen_dir == "ge" else -scores  # higher = flagged first
    a_raw = auroc(scores, labels)
    single = labels.min() == labels.max()
    pos, neg = scores[labels == 1], scores[labels == 0]
    in_sample = best_precision_at_recall(s, recall_target)
    keep, why_units = guarantee.units(groups, seed)
    unit_scores, unit_labels = (scores, labels) if keep is None else (scores[keep], labels[keep])
    promise = _recall_promise(s, unit_scores, unit_labels, recall_target, confidence, why_units) if confidence else None
    best, bounds = (in_sample, None) if promise is None else (promise.pop("index"), promise.pop("bounds"))
    youden = _argmax_strict(s.recall - s.fpr, s) if not single else None
    warnings = []
    if single:
        warnings.append(f"only one class present (every label is {int(labels[0])}): AUROC and average precision "
                        "are undefined; the sweep still runs")
    if in_sample is None and s.n_pos:
        warnings.append(f"no candidate τ reaches recall {recall_target}; widen the grid")
    if promise is not None and promise["status"] != "certified":
        warnings.append(promise["explanation"])
    median = float(np.median(scores))
    flag = scores >= median if chosen_dir == "ge" else scores <= median
    median_precision = float(labels[flag].mean()) if flag.any() else None
    base_rate = float(labels.mean())
    if median_precision is not None and not single and median_precision < base_rate:
        warnings.append(f"flagging the {'upper' if chosen_dir == 'ge' else 'lower'} half of scores gives precision "
                        f"{median_precision:.3f}, below the base rate {base_rate:.3f}: the direction looks inverted")
    p_wrong = _as_probability(scores, chosen_dir)
    acceptance = None
    if accuracy_target is not None:
        acceptance = guarantee.acceptance(scores, labels, unit_scores, unit_labels, chosen_dir, accuracy_target,
                                          confidence, seed, fixed_taus)
        if acceptance["status"] != "certified":
            warnings.append(acceptance["explanation"])
    doc = {
        "n": int(len(scores)),
        "n_wrong": int(s.n_pos),
        "base_rate": base_rate,
        "direction": chosen_dir,
        "direction_reason": why,
        "flag_rule": f"flag a sample when score {'>=' if chosen_dir == 'ge' else '<='} tau",
        "recall_target": recall_target,
        "confidence": confidence,
        "chosen_by": "in-sample: the most precise τ on these samples; no promise about new ones" if not confidence
        else f"guarantee: recall >= {recall_target} on new samples with probability >= {confidence}",
        "auroc": a_raw if chosen_dir == "ge" or a_raw is None else 1.0 - a_raw,
        "auroc_of_score": a_raw,
        "average_precision": None if single else float(average_precision_score(labels, oriented)),
        "ece": None if p_wrong is None else bootstrap_.ece(p_wrong, labels.astype(np.float64), np.ones(len(scores)),
                                                           np.linspace(0, 1, bootstrap_.ECE_BUCKETS + 1)),
        "brier": None if p_wrong is None else float(((p_wrong - labels) ** 2).mean()),
        "candidates": int(len(s.taus)),
        "class_means": {"wrong": float(pos.mean()) if len(pos) else None,
                        "right": float(neg.mean()) if len(neg) else None},
        "cohens_d": cohens_d(pos, neg),
        "chosen": _point(s, best),
        "in_sample": _point(s, in_sample),
        "guarantee": promise,
        "acceptance": acceptance,
        "best_f1": _point(s, _argmax_strict(s.f1, s)),
        "best_youden": _point(s, youden),
        "sanity": {"median": median, "median_split_precision": median_precision, "base_rate": base_rate},
        "examples": _examples(scores, labels, s, best, ids, texts, examples),
        "sweep": _table(s, best, in_sample, bounds),
        "warnings": warnings,
    }
    if bootstrap:
        doc["intervals"] = _intervals(doc, scores, labels, oriented, p_wrong, groups, seed, bootstrap,
                                      confidence or 0.95, on_resample)
    return doc


def _as_probability(scores: np.ndarray, direction: str) -> np.ndarray | None:
    """The score as a probability of being wrong, when it can be one (every score in [0, 1]): the score
    itself for `ge`, 1 - score for `le` (a higher score means right)."""
    if scores.min() < 0.0 or scores.max() > 1.0:
        return None
    return scores if direction == "ge" else 1.0 - scores


def _recall_promise(s: Sweep, unit_scores, unit_labels, target: float, confidence: float, why_units: str) -> dict:
    """The guaranteed choice: among candidates whose recall bound is certified, the most precise."""
    u = sweep(unit_scores, unit_labels, s.direction, s.taus)
    order = np.arange(len(s.taus)) if s.direction == "ge" else np.arange(len(s.taus))[::-1]
    passed = guarantee.certified_recall(u.tp, u.n_pos, target, confidence, order) & (s.flagged > 0)
    bounds = guarantee.lower_bound(u.tp, u.n_pos, confidence)
    index = _best(s, np.where(passed, s.precision, -np.inf), np.where(passed, s.recall, -np.inf)) \
        if passed.any() else None
    least = guarantee.needed(target, 1.0 - confidence)
    status, explanation = guarantee.recall_status(index is not None, u.n_pos, target, confidence)
    return {"confidence": confidence, "target": target, "method": RECALL_METHOD, "assumes": ASSUMES,
            "units": why_units, "n_units": int(len(unit_scores)), "wrong_units": int(u.n_pos), "status": status,
            "explanation": explanation, "recall_bound": None if index is None else float(bounds[index]),
            "wrong_needed": least, "certified_candidates": int(passed.sum()), "index": index, "bounds": bounds}


def _intervals(doc: dict, scores, labels, oriented, p_wrong, groups, seed: int, n_boot: int, level: float,
               on_resample=None) -> dict:
    """Bootstrap intervals (groups resampled) of the ranking, calibration and chosen-τ figures."""
    codes, _ = bootstrap_.codes_of(groups)
    ranked = bootstrap_.Ranked.of(oriented, labels)
    y = labels.astype(np.float64)
    edges = np.linspace(0, 1, bootstrap_.ECE_BUCKETS + 1)
    flagged = None if doc["chosen"] is None else (scores >= doc["chosen"]["tau"] if doc["direction"] == "ge"
                                                  else scores <= doc["chosen"]["tau"])
    acc = doc["acceptance"]
    accepted = None if not acc or acc["tau"] is None else (scores < acc["tau"] if doc["direction"] == "ge"
                                                           else scores > acc["tau"])

    def ratio(num, den):
        return float(num / den) if den > 0 else None

    def statistic(w):
        auc, ap = ranked.ranking(w)
        out = {"auroc": auc, "average_precision": ap}
        if p_wrong is not None:
            out |= {"ece": bootstrap_.ece(p_wrong, y, w, edges), "brier": bootstrap_.brier(p_wrong, y, w)}
        if flagged is not None:
            tp = (w * flagged * y).sum()
            out |= {"precision": ratio(tp, (w * flagged).sum()), "recall": ratio(tp, (w * y).sum())}
        if accepted is not None:
            out |= {"coverage": ratio((w * accepted).sum(), w.sum()),
                    "accepted_accuracy": ratio((w * accepted * (1 - y)).sum(), (w * accepted).sum())}
        return out

    found = bootstrap_.intervals(statistic, codes, len(scores), n_boot, seed, level, on_resample)
    grouped = codes is not None and codes.max() + 1 < len(scores)
    return {"level": level, "resamples": n_boot, "seed": seed,
            "resampled": "groups (samples sharing a prompt stay together)" if grouped else "samples", **found}


def _examples(scores, labels, s: Sweep, best, ids, texts, k: int) -> dict:
    """Up to k samples per quadrant (flagged/unflagged x wrong/right) at the chosen τ."""
    if best is None:
        return {}
    tau = s.taus[best]
    flagged = scores >= tau if s.direction == "ge" else scores <= tau
    out = {}
    for name, mask in (("flagged_wrong", flagged & (labels == 1)), ("flagged_right", flagged & (labels == 0)),
                       ("unflagged_wrong", ~flagged & (labels == 1)), ("unflagged_right", ~flagged & (labels == 0))):
        out[name] = [{"id": None if ids is None else ids[i], "score": float(scores[i]),
                      **({"text": texts[i]} if texts is not None and texts[i] is not None else {})}
                     for i in np.flatnonzero(mask)[:k]]
    return out
