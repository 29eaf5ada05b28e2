"""BFCL, zero-shot: accuracy, the critic's ranking of wrong calls, and critic against confidence remasking
at equal trunk passes, paired on the same calls.

    python benchmarks/bfcl.py --checkpoint runs/functions            # needs pip install --no-deps bfcl-eval
    python benchmarks/bfcl.py --checkpoint RUN --steps 8 --n 100 --data DIR

Prints one JSON document: for each category, confidence at 2T steps and critic at T steps (the critic's
extra pass per step makes them cost the same), each call's outcome paired between the two (McNemar's
exact test), and the AUROC of the per-call critic score (top-5 mean P(wrong) over the slots) against
the call being wrong, which is what `cdt sweep-tau` thresholds on the `--rows` file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from cdt.bfcl.run import bench, requests
from cdt.errors import CdtError
from cdt.mcnemar import compare
from cdt.metrics import auroc
from cdt.settings import BenchSettings, SampleConfig


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--steps", type=int, default=8, help="critic steps T (confidence runs 2T)")
    ap.add_argument("--n", type=int, default=None, help="requests per category (default: all)")
    ap.add_argument("--categories", default="simple_python,multiple")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--data", default=None)
    args = ap.parse_args(argv)
    runs = {}
    try:
        for policy, steps in (("confidence", 2 * args.steps), ("critic", args.steps)):
            settings = BenchSettings(categories=tuple(args.categories.split(",")), n=args.n, data=args.data,
                                     sampler=SampleConfig(policy=policy, steps=steps, temperature=args.temperature,
                                                          spread=True))
            settings.validate()
            outcomes: list = []
            report = bench(args.checkpoint, settings, chosen=requests(settings), on_outcome=outcomes.append)
            runs[policy] = (report, outcomes)
    except CdtError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    doc = {"checkpoint": args.checkpoint, "temperature": args.temperature, "categories": {}}
    for i, category in enumerate(args.categories.split(",")):
        conf, crit = ([o for o in runs[p][1] if o.category == category] for p in ("confidence", "critic"))
        paired = compare(f"critic@{args.steps}", [o.ok for o in crit], f"confidence@{2 * args.steps}",
                         [o.ok for o in conf], "passes")
        doc["categories"][category] = {
            "confidence": runs["confidence"][0].results[i].to_json(),
            "critic": runs["critic"][0].results[i].to_json(),
            "paired": asdict(paired),
            "critic_score_auroc": {p: auroc([o.score for o in outs], [int(not o.ok) for o in outs])
                                   for p, outs in (("confidence", conf), ("critic", crit))},
        }
    print(json.dumps(doc, indent=2))
    return doc


if __name__ == "__main__":
    main()
