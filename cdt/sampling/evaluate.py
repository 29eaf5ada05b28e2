"""`cdt eval`: infill held-out rows with each policy at each step count, on the same rows.

Rows carry their own seeds (one per held-out row), so every policy sees the same
rows with the same random streams, and a result does not depend on the batch size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cdt import calibration_map
from cdt.checkpoint import Checkpoint
from cdt.device import pick_device
from cdt.rng import seed_for
from cdt.sampling.heldout import HeldOut, grade
from cdt.sampling.loop import SampleConfig, generate


@dataclass
class EvalRow:
    policy: str
    steps: int
    passes: float  # trunk passes per generation (generator + critic), mean over batches
    char_acc: float  # share of masked characters restored exactly
    exact: float  # share of rows whose whole masked region is right
    json_valid: float | None  # toolcalls: share of answers that parse as JSON
    field_acc: float | None  # toolcalls: share of argument values (and tool names) right
    seconds: float


def evaluate_policies(ckpt: Checkpoint, held: HeldOut, policies: list[str], steps_list: list[int],
                      batch_size: int, base: SampleConfig, device: str = "auto", on_batch=None) -> list[EvalRow]:
    model = ckpt.build_model(pick_device(device))
    rows = []
    for policy in policies:
        for steps in steps_list:
            cfg = SampleConfig(**{**base.__dict__, "policy": policy, "steps": steps})
            cfg.validate()
            calibration, _ = calibration_map.for_policy(ckpt.path.parent, policy)  # the CLI prints the warning
            right = total = exact = valid = fields_ok = fields = 0
            passes, batches = 0, 0
            t0 = time.perf_counter()
            for lo in range(0, len(held), batch_size):
                hi = min(lo + batch_size, len(held))
                seeds = [seed_for(cfg.seed, i) for i in range(lo, hi)]
                gen = generate(model, held.template[lo:hi], held.protected[lo:hi], cfg, row_seeds=seeds,
                               calibration=calibration)
                target = held.region(lo, hi)
                hit = (gen.tokens == held.clean[lo:hi]) & target
                right += int(hit.sum())
                total += int(target.sum())
                exact += int((hit.sum(1) == target.sum(1)).sum())
                passes += gen.passes["generator"] + gen.passes["critic"]
                batches += 1
                for row, rec in zip(gen.tokens, held.records[lo:hi] if held.records else ()):
                    check = grade(ckpt.vocab, rec, row)
                    valid += check.valid_json
                    fields_ok += check.name_ok + sum(check.fields.values())
                    fields += 1 + len(check.fields)
                if on_batch:
                    on_batch(hi - lo)
            m = len(held)
            graded = held.records is not None
            rows.append(EvalRow(policy, steps, passes / batches, right / max(total, 1), exact / m,
                                valid / m if graded else None, fields_ok / max(fields, 1) if graded else None,
                                time.perf_counter() - t0))
    return rows
