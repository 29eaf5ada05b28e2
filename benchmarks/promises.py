"""Do sweep-tau's thresholds keep their promise on the next samples? The issue's measurement, repeated.

    python benchmarks/promises.py                    # 400 trials of 400 calibration samples
    python benchmarks/promises.py --trials 40 --fresh 200000

Each trial draws calibration samples from a known world (30% wrong; wrong scores ~ N(0.62, 0.15),
right ~ N(0.45, 0.15)), chooses τ in-sample (--confidence 0) and with the guarantee
(--confidence C), and measures each on --fresh new samples of the same world (0: the exact figure
from the normal distributions instead). Prints one JSON document: per choice, the share of trials
in which recall on the new samples fell below the target, the mean τ and precision; the same for
the acceptance promise (--accuracy-target) with its coverage.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import stats

from cdt.thresholds import analyze

WRONG, RIGHT, SHARE = stats.norm(0.62, 0.15), stats.norm(0.45, 0.15), 0.3


def draw(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random(n) < SHARE).astype(int)
    return np.where(y == 1, WRONG.rvs(n, random_state=rng), RIGHT.rvs(n, random_state=rng)), y


def measured(tau: float, fresh, kind: str) -> float:
    """Recall of flagging s >= τ, or accuracy of accepting s < τ, on the fresh samples (or exactly)."""
    if fresh is None:
        if kind == "recall":
            return float(WRONG.sf(tau))
        right, wrong = (1 - SHARE) * RIGHT.cdf(tau), SHARE * WRONG.cdf(tau)
        return float(right / (right + wrong)) if right + wrong > 0 else 1.0
    s, y = fresh
    if kind == "recall":
        return float((s[y == 1] >= tau).mean())
    accepted = s < tau
    return float((y[accepted] == 0).mean()) if accepted.any() else 1.0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--n", type=int, default=400, help="calibration samples per trial")
    ap.add_argument("--fresh", type=int, default=0, help="new samples per trial; 0: exact figures")
    ap.add_argument("--recall-target", type=float, default=0.9)
    ap.add_argument("--accuracy-target", type=float, default=0.8)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out = {c: {"recall_broken": 0, "tau": [], "precision": [], "accuracy_broken": 0, "coverage": [], "made": 0}
           for c in ("in_sample", "guaranteed")}
    for _ in range(args.trials):
        s, y = draw(args.n, rng)
        fresh = draw(args.fresh, rng) if args.fresh else None
        for name, c in (("in_sample", 0.0), ("guaranteed", args.confidence)):
            doc = analyze(s, y, direction="ge", recall_target=args.recall_target, confidence=c,
                          accuracy_target=args.accuracy_target, examples=0, seed=int(rng.integers(1 << 31)))
            row = out[name]
            row["recall_broken"] += measured(doc["chosen"]["tau"], fresh, "recall") < args.recall_target
            row["tau"].append(doc["chosen"]["tau"])
            row["precision"].append(doc["chosen"]["precision"])
            acc = doc["acceptance"]
            if acc["tau"] is not None:
                row["made"] += 1
                row["accuracy_broken"] += measured(acc["tau"], fresh, "accuracy") < args.accuracy_target
            row["coverage"].append(acc["coverage"])
    doc = {"trials": args.trials, "n": args.n, "fresh": args.fresh or "exact", "confidence": args.confidence,
           "recall_target": args.recall_target, "accuracy_target": args.accuracy_target,
           "allowed_share": round(1 - args.confidence, 6)}
    for name, row in out.items():
        doc[name] = {"recall_broken_share": row["recall_broken"] / args.trials,
                     "mean_tau": float(np.mean(row["tau"])), "mean_precision": float(np.mean(row["precision"])),
                     "acceptance_made_share": row["made"] / args.trials,
                     "accuracy_broken_share": row["accuracy_broken"] / max(row["made"], 1),
                     "mean_coverage": float(np.mean(row["coverage"]))}
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
