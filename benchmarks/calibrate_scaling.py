"""`cdt calibrate` time and peak memory at N = 100 and N = 1000 samples.

    python benchmarks/calibrate_scaling.py                      # small architecture, random weights
    python benchmarks/calibrate_scaling.py --checkpoint runs/x  # a trained model
    python benchmarks/calibrate_scaling.py --preset tiny --sizes 10,100 --steps 4

Each N runs in a fresh process, so peak memory (ru_maxrss) is that run's alone.
Prints one JSON document with per-N seconds, peak RSS and the growth of RSS during
calibration (peak minus the RSS after loading the model), and the N-ratio of each.
Targets: time(1000) <= 10.5 x time(100) and peak memory(1000) <= 1.2 x peak memory(100).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    """Current resident memory of this process (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_checkpoint(preset: str, out: Path) -> Path:
    import torch

    from cdt import checkpoint
    from cdt.rundir import CHECKPOINT_NAME
    from cdt.config import resolve
    from cdt.data import load_corpus
    from cdt.model import DiffusionLM

    cfg = resolve(preset)
    corpus = load_corpus("toolcalls", cfg.model.block_size, cfg.data.n_records, cfg.data.seed)
    cfg.model.vocab_size = len(corpus.vocab)
    torch.manual_seed(0)
    model = DiffusionLM(cfg.model)
    return checkpoint.save(out / CHECKPOINT_NAME, model=model, config=cfg, vocab=corpus.vocab, step=0,
                           extra={"mask_region": "answer"})


def child(args) -> None:
    import torch

    from cdt.calibrate import calibrate
    from cdt.settings import CalibrateSettings, from_flags
    from cdt.checkpoint import load
    from cdt.device import tune_cpu_allocator

    tuned = not args.default_malloc and tune_cpu_allocator()  # as `cdt calibrate` runs
    torch.set_num_threads(args.threads)
    ckpt = load(args.checkpoint)
    ckpt.build_model()  # model weights resident before the baseline is read
    base = rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        settings = from_flags(CalibrateSettings, n_samples=args.n, steps=args.steps, batch_size=args.batch_size)
        result = calibrate(ckpt, settings, Path(tmp) / "scores.jsonl", None)
        seconds = time.perf_counter() - t0
    print(json.dumps({"n": args.n, "seconds": seconds, "peak_rss_mib": peak_mib(), "baseline_rss_mib": base,
                      "growth_mib": peak_mib() - base, "tokens": result.tokens.n, "allocator_tuned": tuned}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--preset", default="small", help="architecture of the untrained model (without --checkpoint)")
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--default-malloc", action="store_true", help="leave glibc's allocator as it is (cdt tunes it)")
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.n is not None:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or str(make_checkpoint(args.preset, Path(tmp)))
        runs = []
        for n in (int(x) for x in args.sizes.split(",")):
            cmd = [sys.executable, __file__, "--checkpoint", ckpt, "--n", str(n), "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
            cmd += ["--default-malloc"] if args.default_malloc else []
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(proc.stdout))
    small, large = runs[0], runs[-1]
    print(json.dumps({
        "model": args.checkpoint or f"untrained {args.preset}", "steps": args.steps, "batch_size": args.batch_size,
        "runs": runs,
        "n_ratio": large["n"] / small["n"],
        "time_ratio": round(large["seconds"] / small["seconds"], 2),
        "peak_memory_ratio": round(large["peak_rss_mib"] / small["peak_rss_mib"], 3),
        "growth_ratio": round(large["growth_mib"] / max(small["growth_mib"], 1e-9), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
