"""Critic training and sampling throughput on a Hugging Face backbone (`--backbone hf:PATH`).

    python benchmarks/backbone_throughput.py --device cuda            # a BERT-base shape (110M), random weights
    python benchmarks/backbone_throughput.py --size tiny --device cpu # seconds: the slow test's check

Builds a random BERT masked LM from a config (nothing downloaded) with a WordPiece tokenizer trained
on Python's pydoc topics, saves both with `save_pretrained`, and trains through `cdt train` on that
text: the critic head alone on the frozen backbone, then with `--train-trunk`. Training throughput is
the median of the logged windows after the first (tokens of the batch rows per second). Sampling
then infills a 30% span of validation windows with each policy, at batch 1 and 64.

Prints one JSON document. Throughput does not depend on the weights, so random ones do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cdt import checkpoint
from cdt.config import resolve
from cdt.data import load_corpus
from cdt.device import pick_device, synchronize
from cdt.rng import seed_for
from cdt.sampling.heldout import HeldOut
from cdt.sampling.loop import generate
from cdt.sampling.template import heldout_templates
from cdt.settings import SampleConfig
from cdt.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import hf_models  # noqa: E402  (the tiny families the tests build; the base shape is built here)

SIZES = {"base": (hf_models.BASE, 30522), "tiny": (hf_models.TINY, 500)}


def build_backbone(path: Path, size: str) -> Path:
    shape, tokens = SIZES[size]
    return hf_models.build(path, "bert", shape=shape, tokens=tokens, text_chars=None)


def training(backbone: Path, text: Path, out: Path, args, train_trunk: bool) -> dict:
    cfg = resolve("small", overrides=[{
        "data": {"source": str(text)},
        "model": {"backbone": f"hf:{backbone}", "train_trunk": train_trunk},
        "train": {"device": args.device, "max_iters": args.iters, "batch_size": args.batch_size,
                  "log_interval": max(1, args.iters // 6), "eval_interval": args.iters, "eval_rows": 8,
                  "rollout_eval_rows": 0, "optimizer": "adamw",  # both settings train the critic from step 1
                  "critic_alpha_start": 1.0, "critic_warmup_start": 0, "critic_warmup_end": 0}}])
    t0 = time.perf_counter()
    result = train(cfg, out)
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    windows = [r["tokens_per_s"] for r in logs if r["kind"] == "train"][1:]  # the first window holds the warm-up
    return {"tokens_per_s": statistics.median(windows) if windows else result.tokens_per_s,
            "seconds": time.perf_counter() - t0, "params": result.params}


def sampling(run: Path, args, device) -> dict:
    ckpt = checkpoint.load(run)
    model = ckpt.build_model(device)
    corpus = load_corpus(ckpt.config.data.source, ckpt.config.model.block_size, tokenizer=ckpt.vocab)
    held = HeldOut(*heldout_templates(corpus, args.rows, "span"), records=None, masking="span")
    out = {}
    for policy in args.policies.split(","):
        for b in (1, min(64, args.rows)):
            cfg = SampleConfig(policy=policy, steps=args.steps)
            warm = held.take(torch.arange(b))
            generate(model, warm.template.to(device), warm.protected.to(device), cfg)
            synchronize(device)
            t0, tokens, passes = time.perf_counter(), 0, 0
            for lo in range(0, args.rows, b):
                part = held.take(torch.arange(lo, min(lo + b, args.rows)))
                gen = generate(model, part.template.to(device), part.protected.to(device), cfg,
                               row_seeds=[seed_for(0, i) for i in range(lo, min(lo + b, args.rows))])
                tokens += int((part.template == ckpt.vocab.mask_id).sum())
                passes += sum(gen.passes.values())
            synchronize(device)
            elapsed = time.perf_counter() - t0
            out[f"{policy}@{b}"] = {"tokens_per_s": tokens / elapsed, "ms_per_row": 1000 * elapsed / args.rows,
                                    "passes_per_step": passes / ((args.rows + b - 1) // b) / args.steps}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="base", choices=sorted(SIZES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=60, help="training steps per setting")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rows", type=int, default=64, help="rows generated per sampling measurement")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--policies", default="confidence,critic,critic-1pass")
    args = ap.parse_args()
    device = pick_device(args.device)
    args.device = device.type
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text = root / "topics.txt"
        text.write_text(hf_models.topics_text(None), encoding="utf-8")
        t0 = time.perf_counter()
        backbone = build_backbone(root / "bert", args.size)
        built = time.perf_counter() - t0
        frozen = training(backbone, text, root / "frozen", args, False)
        tuned = training(backbone, text, root / "tuned", args, True)
        samples = sampling(root / "frozen", args, device)
    print(json.dumps({"device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                      "size": args.size, "backbone_params": frozen["params"], "build_s": built,
                      "batch_size": args.batch_size, "block_size": 256, "iters": args.iters,
                      "train_frozen_tokens_per_s": frozen["tokens_per_s"],
                      "train_trunk_tokens_per_s": tuned["tokens_per_s"],
                      "frozen_over_trunk": frozen["tokens_per_s"] / tuned["tokens_per_s"],
                      "sampling": samples, "steps": args.steps}, indent=2))


if __name__ == "__main__":
    main()
