"""What remasking could still fix once a sampler has finished: the ceiling of a critic's take-backs.

    python benchmarks/critic_ceiling.py --checkpoint runs/x                        # 1,024 held-out answers
    python benchmarks/critic_ceiling.py --checkpoint runs/x --threshold 0.98 --levels 0.5,0.9

Decodes held-out answers once, as `cdt eval` does (the same rows, seeds and grading; by default confidence
with threshold commits, greedy + spread), then judges every finished row and repairs what the judge flags:

- refill: the flagged positions go back to [MASK] and the same sampler fills them again;
- second choice: one generator pass with the flagged positions masked, each taking the generator's best
  token other than the one flagged.

Judges: the full-row critic (one pass on the finished row; P(wrong) > each level), and an oracle that flags
exactly the wrong tokens, which is what a perfect critic would buy with each repair. Passes per row count
the decode, the judge's pass (the oracle's too: a perfect critic still reads the row) and the repair's
passes, for rows that needed them. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json

import torch

from cdt.checkpoint import load
from cdt.device import autocast, pick_device
from cdt.errors import CdtError
from cdt.metrics import auroc
from cdt.rng import seed_for
from cdt.sampling.heldout import load_heldout
from cdt.sampling.infill import infill
from cdt.sampling.loop import critic_probs, filter_logits, generate
from cdt.settings import SampleConfig
from cdt.vocab import MASK_ID, emittable


def second_choice(model, x: torch.Tensor, flag: torch.Tensor, allowed) -> torch.Tensor:
    """(b, n) x with each flagged token replaced by the generator's best other token, read in one pass on x
    with the flagged positions masked."""
    device = next(model.parameters()).device
    masked = x.masked_fill(flag, MASK_ID).to(device)
    with torch.no_grad(), autocast(device):
        logits = model.generator_logits(model(masked), masked).float()
    top2 = filter_logits(logits, SampleConfig(temperature=0.0), allowed).topk(2, dim=-1).indices.cpu()  # (b, n, 2)
    other = torch.where(top2[..., 0] == x, top2[..., 1], top2[..., 0])
    return torch.where(flag, other, x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--n", type=int, default=1024, help="held-out answers")
    ap.add_argument("--policy", default="confidence")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--commit", default="threshold")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--distrust", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--no-spread", action="store_true")
    ap.add_argument("--levels", default="0.5,0.8,0.95", help="critic P(wrong) levels that flag a token")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto [default: cpu]")
    args = ap.parse_args()
    try:  # bad input: one line, as cdt's commands say it
        levels = [float(v) for v in args.levels.split(",")]
        cfg = SampleConfig(policy=args.policy, steps=args.steps, commit=args.commit, threshold=args.threshold,
                           distrust=args.distrust, temperature=args.temperature, spread=not args.no_spread)
        cfg.validate()
        ckpt = load(args.checkpoint)
    except (ValueError, CdtError) as e:
        ap.error(str(e))
    device = pick_device(args.device)
    model = ckpt.build_model(device)
    if not model.has_critic:
        ap.error("this checkpoint has no critic to judge with")
    held = load_heldout(ckpt, args.n, seed=cfg.seed)
    null = ckpt.config.data.emits_null
    allowed = emittable(model.cfg.vocab_size, null, device)
    judges = [f"critic>{v:g}" for v in levels] + ["oracle"]
    tally = {"exact": 0, "passes": 0} | {j: {"flagged": 0, "refill": 0, "refill_passes": 0, "second": 0}
                                          for j in judges}
    scores, wrongs = [], []
    plan = [(rows, [seed_for(cfg.seed, int(i)) for i in rows]) for rows in held.by_length(args.batch_size)]
    for (_, seeds), done in zip(plan, infill(model, held, plan, cfg, allow_null=null)):  # batch by batch
        part, x = done.part, done.generation.tokens
        region = part.region()
        wrong = (x != part.clean) & region
        tally["exact"] += sum(part.exact(ckpt.vocab, x))
        tally["passes"] += int(done.generation.row_passes.sum())
        p = critic_probs(model, x)
        scores += p[region].tolist()
        wrongs += wrong[region].tolist()
        for j, flag in zip(judges, [(p > v) & region for v in levels] + [wrong]):
            t = tally[j]
            t["flagged"] += int(flag.any(1).sum())
            again = generate(model, x.masked_fill(flag, MASK_ID), ~flag, cfg, row_seeds=seeds, allow_null=null)
            t["refill"] += sum(part.exact(ckpt.vocab, again.tokens))
            t["refill_passes"] += int(again.row_passes.sum())
            t["second"] += sum(part.exact(ckpt.vocab, second_choice(model, x, flag, allowed)))
    n = len(held)
    base = tally["passes"] / n
    out = {"checkpoint": str(ckpt.path), "n": n, "sampler": cfg.to_dict(),
           "decoded": {"exact": tally["exact"] / n, "passes_per_row": base},
           "critic_token_auroc": auroc(scores, wrongs), "wrong_tokens": int(sum(wrongs)), "judges": {}}
    for j in judges:
        t = tally[j]
        out["judges"][j] = {"rows_flagged": t["flagged"] / n,
                            "refill": {"exact": t["refill"] / n, "passes_per_row": base + 1 + t["refill_passes"] / n},
                            "second_choice": {"exact": t["second"] / n, "passes_per_row": base + 1 + t["flagged"] / n}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
