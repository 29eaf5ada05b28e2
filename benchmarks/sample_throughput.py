"""Sampling throughput per policy at batch 1 and batch 64, and trunk passes per step.

    python benchmarks/sample_throughput.py            # small preset architecture, random weights
    python benchmarks/sample_throughput.py --checkpoint runs/x
    python benchmarks/sample_throughput.py --device cuda     # bf16 autocast, as cdt sample runs there

Prints one JSON document. Generated tokens are the masked answer characters of
held-out toolcalls records; throughput does not depend on the weights, so the
default builds an untrained `small` model rather than needing a checkpoint.

Each result also gives the passes a row needed (mean), milliseconds per row, the share of
rows whose masked region came out exactly right (meaningful with --checkpoint) and
exact-match points per pass: quality per unit of compute; `cost_over_confidence` puts each
policy's time and passes per row over confidence's at the same steps and batch. And the model FLOP/s its passes reached (forward FLOPs of every
trunk pass, counted as train_throughput.py counts them, over the padded width) and
their share of a square-matmul peak measured in the same run; `ceiling_over_batch1`
is that peak over batch 1's FLOP/s: the most any batch could gain over one row if it
ran every model FLOP at the peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cdt.checkpoint import Checkpoint, load
from cdt.config import resolve
from cdt.data import load_corpus
from cdt.device import pick_device, synchronize, tune_cpu_allocator
from cdt.model import DiffusionLM
from cdt.rng import seed_for
from cdt.sampling.loop import generate
from cdt.settings import SampleConfig
from cdt.sampling.heldout import HeldOut
from cdt.sampling.template import heldout_templates
from cdt.vocab import MASK_ID
from train_throughput import flops_per_position, matmul_peak  # this folder: the same counts and peak


def pass_flops(cfg, width: int) -> tuple[float, float]:
    """Forward model FLOPs per position of a row `width` wide: (generator pass, critic pass).
    A third of the training count (forward + backward = 3 x forward for every product)."""
    gen = flops_per_position(cfg, width, critic=0) / 3
    return gen, flops_per_position(cfg, width, critic=1) / 3 - gen


def measure(model, held, scfg: SampleConfig, b: int, rows: int, device, timed: bool = True):
    """Generate the first `rows` held-out rows in batches of b: (seconds, (tokens, passes, row passes, exact
    rows, model FLOPs)); the same rows and seeds at every batch size. timed=False: the counts alone."""
    synchronize(device)
    t0, tokens, passes, flops, row_passes, exact = time.perf_counter(), 0, 0, 0.0, 0, 0
    for lo in range(0, rows, b):
        hi = min(lo + b, rows)
        part = held.take(torch.arange(lo, hi))  # cut to its longest row, as cdt sample and eval run
        gen = generate(model, part.template, part.protected, scfg, row_seeds=[seed_for(0, i) for i in range(lo, hi)])
        if timed:
            continue
        tokens += int((part.template == MASK_ID).sum())
        passes += sum(gen.passes.values())
        row_passes += int(gen.row_passes.sum())
        region = part.template == MASK_ID
        exact += int(((gen.tokens == part.clean) | ~region).all(1).sum())
        g, c = pass_flops(model.cfg, part.template.shape[1])
        flops += part.template.numel() * (gen.passes["generator"] * g + gen.passes["critic"] * c)
    synchronize(device)
    return time.perf_counter() - t0, (tokens, passes, row_passes, exact, flops)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--preset", default="small", help="architecture of the untrained model (without --checkpoint)")
    ap.add_argument("--policies", default="confidence,critic,critic-1pass")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rows", type=int, default=128, help="rows generated per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over every setting in turn; the median round counts")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto [default: cpu]")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator as it is (cdt tunes it)")
    args = ap.parse_args()
    tuned = not args.default_malloc and tune_cpu_allocator()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if max(int(x) for x in args.batches.split(",")) > args.rows:
        ap.error("every batch size must be at most --rows")
    if args.checkpoint:
        ckpt: Checkpoint = load(args.checkpoint)
        model, cfg = ckpt.build_model(), ckpt.config
    else:
        cfg = resolve(args.preset)
    corpus = load_corpus("toolcalls", cfg.model.block_size, 3000, cfg.data.seed)
    if not args.checkpoint:
        cfg.model.vocab_size = len(corpus.vocab)
        torch.manual_seed(0)
        model = DiffusionLM(cfg.model).eval()
    device = pick_device(args.device)
    model = model.to(device)
    held = HeldOut(*heldout_templates(corpus, args.rows), records=None, masking="answer")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype)
    settings = [(p, int(b)) for p in args.policies.split(",") for b in args.batches.split(",")]
    for policy, b in settings:  # warm-up, once per setting
        warm = held.take(torch.arange(b))
        generate(model, warm.template, warm.protected, SampleConfig(policy=policy, steps=args.steps))
    times = {s: [] for s in settings}
    for _ in range(args.repeats):  # rounds in turn: a busy moment of a shared machine hits every setting alike
        for policy, b in settings:
            elapsed, _ = measure(model, held, SampleConfig(policy=policy, steps=args.steps), b, args.rows, device)
            times[(policy, b)].append(elapsed)
    results = {}
    for (policy, b), spent in times.items():
        elapsed = sorted(spent)[len(spent) // 2]  # the median round
        _, (tokens, passes, row_passes, exact, flops) = measure(model, held, SampleConfig(policy=policy, steps=args.steps),
                                                                 b, args.rows, device, timed=False)
        results[f"{policy}@{b}"] = {"tokens_per_s": tokens / elapsed,
                                   "passes_per_step": passes / ((args.rows + b - 1) // b) / args.steps,
                                   "passes_per_row": row_passes / args.rows,
                                   "ms_per_row": 1000 * elapsed / args.rows,
                                   "exact": exact / args.rows,
                                   "exact_per_pass": 100 * exact / max(row_passes, 1),
                                   "model_gflops_per_s": flops / elapsed / 1e9,
                                   "share_of_matmul_peak": flops / elapsed / peak}
    small, large = (int(x) for x in (args.batches.split(",")[0], args.batches.split(",")[-1]))
    ratios = {p: results[f"{p}@{large}"]["tokens_per_s"] / results[f"{p}@{small}"]["tokens_per_s"]
              for p in args.policies.split(",")}
    peak = max(peak, matmul_peak(device, dtype))  # measured before and after the generations
    for r in results.values():
        r["share_of_matmul_peak"] = r["model_gflops_per_s"] * 1e9 / peak
    # the most a larger batch could gain over the small one: every model FLOP at the matmul peak
    ceiling = {p: peak / (results[f"{p}@{small}"]["model_gflops_per_s"] * 1e9) for p in args.policies.split(",")}
    # each policy's cost at equal steps as a multiple of confidence's (time and passes per row, the same run)
    over = {k: {"ms_per_row": r["ms_per_row"] / results[f"confidence@{k.split('@')[1]}"]["ms_per_row"],
                "passes_per_row": r["passes_per_row"] / results[f"confidence@{k.split('@')[1]}"]["passes_per_row"]}
            for k, r in results.items() if f"confidence@{k.split('@')[1]}" in results}
    print(json.dumps({"steps": args.steps, "repeats": args.repeats, "device": str(device), "threads": torch.get_num_threads(), "allocator_tuned": tuned,
                      "matmul_peak_gflops": peak / 1e9, "results": results,
                      f"batch{large}_over_batch{small}": ratios, f"ceiling_over_batch{small}": ceiling,
                      "cost_over_confidence": over}, indent=2))


if __name__ == "__main__":
    main()
