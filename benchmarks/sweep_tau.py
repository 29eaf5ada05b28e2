"""The τ sweep on many scores against a naive loop over a threshold grid.

    python benchmarks/sweep_tau.py                 # 1,000,000 scores, 1,000 grid thresholds
    python benchmarks/sweep_tau.py --n 100000

Prints one JSON document:
- exact_s: `cdt sweep-tau`'s default, every distinct score a candidate (about n of them);
- grid_s: the same code on the 1,000-threshold grid;
- naive_s: a loop over the same grid, one vectorised pass over all scores per τ;
- same_optimum: the grid sweep and the naive loop choose the same τ with the same counts.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from cdt.thresholds import best_precision_at_recall, sweep


def naive(scores, labels, taus, target):
    """Highest precision with recall >= target, ties to the higher recall: one pass over the data per τ."""
    positives = labels.sum()
    best = None
    for tau in taus:
        flagged = scores >= tau
        tp = int(np.count_nonzero(flagged & labels))
        fp = int(np.count_nonzero(flagged)) - tp
        if tp + fp == 0 or tp / positives < target:
            continue
        key = (tp / (tp + fp), tp / positives)
        if best is None or key > best[0]:
            best = (key, float(tau), tp, fp)
    return best


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-tau", type=int, default=1000)
    ap.add_argument("--recall-target", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.random(args.n) < 0.2
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)  # continuous: about n distinct values
    grid = np.quantile(scores, np.linspace(0.0, 1.0, args.n_tau))

    def exact():
        s = sweep(scores, labels, "ge")
        return s, best_precision_at_recall(s, args.recall_target)

    def on_grid():
        s = sweep(scores, labels, "ge", grid)
        return s, best_precision_at_recall(s, args.recall_target)

    exact_s, (se, ie) = best_of(exact, args.repeats)
    grid_s, (sg, ig) = best_of(on_grid, args.repeats)
    naive_s, expected = best_of(lambda: naive(scores, labels, np.unique(grid), args.recall_target), 1)
    print(json.dumps({
        "n": args.n, "grid_thresholds": args.n_tau, "exact_candidates": int(len(se.taus)),
        "exact_s": round(exact_s, 4), "grid_s": round(grid_s, 5), "naive_s": round(naive_s, 3),
        "speedup_exact_vs_naive": round(naive_s / exact_s, 1),
        "speedup_grid_vs_naive": round(naive_s / grid_s, 1),
        "same_optimum": bool(expected[1] == float(sg.taus[ig]) and expected[2:] == (int(sg.tp[ig]), int(sg.fp[ig]))),
        "exact_tau": float(se.taus[ie]), "grid_tau": float(sg.taus[ig]),
    }, indent=2))


if __name__ == "__main__":
    main()
