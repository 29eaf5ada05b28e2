"""Training throughput with and without the critic pass, and model-FLOPs utilisation (MFU).

    python benchmarks/train_throughput.py                   # small preset, batch 16
    python benchmarks/train_throughput.py --batch-size 64   # the prototype's setting
    # the default before Muon and the copy head:
    python benchmarks/train_throughput.py --optimizer adamw --no-copy --ngram 0 --no-qk-norm
    python benchmarks/train_throughput.py --ngram 0         # without the hashed n-gram embeddings
    python benchmarks/train_throughput.py --no-qk-norm      # without QK-norm
    python benchmarks/train_throughput.py --critic-rows 8   # the critic's pass on 8 of the 16 rows

Each step is what `cdt train` runs: the preset's model and optimizer (Muon's orthogonalisation
counts as time, not as model FLOPs; so do the n-gram table's lookups and update, and the
moving average of the weights, `train.ema`).

Prints one JSON document. MFU is measured against the fp32 (CPU) or bf16 (CUDA)
matmul peak measured in the same run, so the ratio holds on a noisy shared machine.
`trunk_ceiling` is the most MFU a trunk layer could reach at the steps' shapes on this
machine: its matrix products and attention timed alone, everything else free.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from cdt.config import resolve
from cdt.data import load_corpus
from cdt.model import DiffusionLM
from cdt.noise import get_schedule, sample_t
from cdt.optim import make_optimizer, set_learning_rates
from cdt.device import pick_device, synchronize, tune_cpu_allocator
from cdt.ema import WeightAverage
from cdt.errors import UsageError
from cdt.step import diffusion_step


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes=(1024, 2048, 1024, 2048), repeats: int = 10) -> float:
    """Best FLOP/s of square matmuls (best of several rounds: a shared machine only ever slows them)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        synchronize(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0))
    return best


def flops_per_position(cfg, n: int, critic: float) -> float:
    """Forward + backward FLOPs per sequence position: 6 x matmul parameters + attention scores.

    critic: the share of the batch's rows the critic's pass takes (0: none, 1: all)."""
    d, L, v = cfg.d_model, cfg.n_layers, cfg.vocab_size
    trunk = 6 * (12 * d * d * L) + 12 * L * n * d  # qkv+proj (4d^2) and mlp (8d^2) per layer; QK^T and AV
    head = 6 * d * v
    if cfg.copy:  # pointer q/k projections, its scores over the row, the per-character sum
        head += 6 * (2 * d * d) + 6 * n * d + 6 * n * v
    return trunk + head + critic * (trunk + 6 * d)


def _best_time(fn, device: torch.device, repeats: int) -> float:
    """Fastest of `repeats` timed calls after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def trunk_ceiling(cfg, rows: int, width: int, device: torch.device, dtype: torch.dtype, peak: float,
                  repeats: int = 10) -> dict:
    """The most MFU a trunk layer's forward and backward could reach here at this batch shape.

    Its matrix products (forward, input gradient and weight gradient of the qkv, output and two MLP
    projections) and its attention (scaled_dot_product_attention forward and backward, no key mask)
    are timed alone, each at its best; everything else (norms, GELU, rotary, residual adds, the
    optimizer) is taken as free. The share of each in the layer's FLOPs comes from the same count as
    `flops_per_position`."""
    d, h, m = cfg.d_model, cfg.n_heads, rows * width
    mm_s, mm_flops = 0.0, 0.0
    for out_f, in_f in ((3 * d, d), (d, d), (cfg.mlp_ratio * d, d), (d, cfg.mlp_ratio * d)):
        x = torch.randn(m, in_f, device=device, dtype=dtype)
        w = torch.randn(out_f, in_f, device=device, dtype=dtype)
        dy = torch.randn(m, out_f, device=device, dtype=dtype)
        mm_s += _best_time(lambda: (x @ w.t(), dy @ w, dy.t() @ x), device, repeats)
        mm_flops += 6 * m * in_f * out_f
    q, k, v = (torch.randn(rows, h, width, d // h, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    dy = torch.randn(rows, h, width, d // h, device=device, dtype=dtype)
    attn_s = _best_time(lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), dy),
                        device, repeats)
    attn_flops = 12 * m * width * d
    return {"rows": rows, "width": width,
            "matmul_share_of_peak": mm_flops / mm_s / peak, "attention_share_of_peak": attn_flops / attn_s / peak,
            "attention_share_of_flops": attn_flops / (attn_flops + mm_flops),
            "mfu": (mm_flops + attn_flops) / (mm_s + attn_s) / peak}


def measure(cfg, corpus, device, steps: int, critic: bool) -> dict:
    cfg.model.critic = "linear" if critic else "none"
    torch.manual_seed(0)
    model = DiffusionLM(cfg.model).to(device).train()
    opt = make_optimizer(model, cfg.train)
    set_learning_rates(opt, cfg.train.warmup_iters, cfg.train)  # the peak rates
    average = WeightAverage(model, cfg.train.ema) if cfg.train.ema > 0 else None
    schedule = get_schedule(cfg.train.noise_schedule)
    positions, flops, elapsed = 0, 0.0, 0.0
    # untimed warm-up steps: on CUDA, two left the first measurement at twice the step time it had after 30
    warmup = 2 if device.type == "cpu" else 30
    for step in range(steps + warmup):
        g = torch.Generator().manual_seed(step)
        batch = corpus.batch(step, cfg.train.batch_size, 0)
        synchronize(device)
        t0 = time.perf_counter()
        out = diffusion_step(model, batch, sample_t(len(batch.ids), g), schedule, cfg.train, "answer", g, device,
                             critic_rows=cfg.train.critic_rows)
        loss = out.gen_loss + (out.critic_loss if critic else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            average.update()
        synchronize(device)
        if step >= warmup:
            elapsed += time.perf_counter() - t0
            b, n = batch.ids.shape
            positions += b * n
            share = out.critic_logits.shape[0] / b if critic else 0.0
            flops += b * n * flops_per_position(cfg.model, n, share)
    return {"step_s": elapsed / steps, "positions_per_s": positions / elapsed, "flops_per_s": flops / elapsed,
            "mean_width": positions / (steps * cfg.train.batch_size)}


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--copy", action=argparse.BooleanOptionalAction, default=None,
                    help="with or without the copy head (model.copy) [default: the preset's]")
    ap.add_argument("--optimizer", choices=("adamw", "muon"), default=None, help="[default: the preset's]")
    ap.add_argument("--ngram", type=int, default=None,
                    help="largest hashed n-gram size, 0 = none (model.ngram) [default: the preset's]")
    ap.add_argument("--qk-norm", action=argparse.BooleanOptionalAction, default=None,
                    help="with or without QK-norm (model.qk_norm) [default: the preset's]")
    ap.add_argument("--critic-rows", type=int, default=None,
                    help="rows of each batch the critic's pass takes, 0 = all (train.critic_rows) "
                         "[default: the preset's]")
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator as it is (cdt tunes it)")
    args = ap.parse_args(argv)
    given = {"model": {"copy": args.copy, "ngram": args.ngram, "qk_norm": args.qk_norm},
             "train": {"batch_size": args.batch_size, "optimizer": args.optimizer, "critic_rows": args.critic_rows}}
    try:  # the same type and range checks as cdt train (--ngram 1, --batch-size 0, an unknown preset)
        cfg = resolve(args.preset, overrides=[{s: {k: v for k, v in kv.items() if v is not None}
                                               for s, kv in given.items()}])
    except UsageError as e:
        ap.error(str(e))
    tuned = not args.default_malloc and tune_cpu_allocator()
    device = pick_device(args.device)
    corpus = load_corpus(cfg.data.source, cfg.model.block_size, min(cfg.data.n_records, 5000), cfg.data.seed)
    cfg.model.vocab_size = len(corpus.vocab)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, dtype)
    gen = measure(cfg, corpus, device, args.steps, critic=False)
    both = measure(cfg, corpus, device, args.steps, critic=True)
    peak = max(peak, matmul_peak(device, dtype))  # measured before and after the steps
    ceiling = trunk_ceiling(cfg.model, cfg.train.batch_size, round(both["mean_width"]), device, dtype, peak)
    print(json.dumps({
        "preset": args.preset, "batch_size": cfg.train.batch_size, "copy_head": cfg.model.copy,
        "ngram": cfg.model.ngram, "qk_norm": cfg.model.qk_norm, "critic_rows": cfg.train.critic_rows,
        "optimizer": cfg.train.optimizer, "device": str(device),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "allocator_tuned": tuned, "matmul_peak_gflops": peak / 1e9,
        "generator_only": {**gen, "mfu": gen["flops_per_s"] / peak},
        "with_critic": {**both, "mfu": both["flops_per_s"] / peak},
        "critic_step_cost_ratio": both["step_s"] / gen["step_s"],
        "trunk_ceiling": ceiling,
        "trunk_ceiling_note": "the most MFU a trunk layer could reach at the steps' mean width: its matrix "
                              "products and attention timed alone, everything else free",
        "positions_per_s_note": "padded positions per second (the compute actually spent)",
    }, indent=2))


if __name__ == "__main__":
    main()
