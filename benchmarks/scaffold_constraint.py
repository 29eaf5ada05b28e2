"""The cost of constrained slot decoding as a share of sampling time (target: at most 10%).

    python benchmarks/scaffold_constraint.py               # small preset architecture, random weights
    python benchmarks/scaffold_constraint.py --rows 64 --steps 16 --temperature 1.0

Prints one JSON document. Scaffolded held-out toolcalls answers (the eight built-in tools) and a
richer typed tool (bounded integer, date, array, nested object, any) are generated with their
`SlotConstraint`; the time spent inside the constraint is measured around each call, and the
whole generation is timed again without the constraint on the same rows, in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdt import scaffold  # noqa: E402
from cdt.config import resolve  # noqa: E402
from cdt.data import SEPARATOR, load_corpus  # noqa: E402
from cdt.device import tune_cpu_allocator  # noqa: E402
from cdt.model import DiffusionLM  # noqa: E402
from cdt.sampling.loop import generate  # noqa: E402
from cdt.settings import SampleConfig  # noqa: E402

RICH = scaffold.Schema("book_table", (
    scaffold.Field("restaurant", "string"), scaffold.Field("people", "integer", minimum=1, maximum=12),
    scaffold.Field("date", "string", format="date"),
    scaffold.Field("diet", "array", items=scaffold.Field("item", "enum", ("vegan", "halal", "none")), max_items=2),
    scaffold.Field("where", "object", fields=(scaffold.Field("lat", "number"), scaffold.Field("lon", "number"))),
    scaffold.Field("extra", "any", optional=True)))


class Timed:
    """A constraint that adds up the seconds spent inside it."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, *args):
        t0 = time.perf_counter()
        out = self.inner(*args)
        self.seconds += time.perf_counter() - t0
        return out


def measure(model, schemas, prompts, vocab, cfg: SampleConfig, block: int) -> dict:
    ids, protected = scaffold.template(schemas, vocab, prompts, SEPARATOR, block)
    starts = [len(vocab.encode(p + SEPARATOR)) for p in prompts]
    timed = Timed(scaffold.SlotConstraint.of(list(zip(schemas, starts)), vocab))
    generate(model, ids[:2], protected[:2], cfg, allow_null=True)  # warm-up
    t0 = time.perf_counter()
    gen = generate(model, ids, protected, cfg, allow_null=True, constraint=timed)
    with_constraint = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate(model, ids, protected, cfg, allow_null=True)
    without = time.perf_counter() - t0
    valid = sum(scaffold.parse(s, vocab.decode(row[start:])).valid for s, row, start in zip(schemas, gen.tokens, starts))
    return {"rows": len(prompts), "seconds_with_constraint": round(with_constraint, 3),
            "seconds_without": round(without, 3), "seconds_inside_constraint": round(timed.seconds, 3),
            "constraint_share": round(timed.seconds / with_constraint, 4), "valid_calls": valid}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="architecture of the untrained model")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--policy", default="confidence")
    args = ap.parse_args(argv)
    tune_cpu_allocator()
    torch.set_num_threads(torch.get_num_threads())
    cfg = resolve(args.preset)
    block = max(cfg.model.block_size, 320)
    cfg.model.block_size = block
    corpus = load_corpus("toolcalls", block, 2000, cfg.data.seed)
    cfg.model.vocab_size = len(corpus.vocab)
    torch.manual_seed(0)
    model = DiffusionLM(cfg.model).eval()
    scfg = SampleConfig(policy=args.policy, steps=args.steps, temperature=args.temperature)
    records = corpus.records[: args.rows]
    doc = {"preset": args.preset, "steps": args.steps, "temperature": args.temperature, "policy": args.policy,
           "threads": torch.get_num_threads(),
           "builtin_tools": measure(model, [scaffold.builtin(r.tool) for r in records], [r.prompt for r in records],
                                    corpus.vocab, scfg, block),
           "typed_tool": measure(model, [RICH] * len(records), [r.prompt for r in records], corpus.vocab, scfg, block)}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
