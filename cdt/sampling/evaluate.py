"""`cdt eval`: infill held-out answers with each policy at each step count, on the same rows.

Rows carry their own seeds (one per held-out record), so every policy sees the same
records with the same random streams, and a result does not depend on the batch size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


from cdt.checkpoint import Checkpoint
from cdt.data import SEPARATOR, load_corpus
from cdt.data.toolcalls import check_answer
from cdt.errors import CdtError
from cdt.rng import seed_for
from cdt.sampling.loop import SampleConfig, generate
from cdt.device import pick_device
from cdt.sampling.template import answer_templates
from cdt.vocab import PAD_ID


@dataclass
class EvalRow:
    policy: str
    steps: int
    passes: float  # trunk passes per generation (generator + critic), mean over batches
    char_acc: float  # share of masked characters restored exactly
    exact: float  # share of rows whose whole masked region is right
    json_valid: float  # share of answers that parse as JSON
    field_acc: float  # share of argument values (and tool names) right
    seconds: float


def heldout_rows(ckpt: Checkpoint, n: int):
    """(clean, template, protected, records) for n held-out toolcalls records, answers masked."""
    data = ckpt.config.data
    if data.source != "toolcalls":
        raise CdtError("cdt eval needs a checkpoint trained on the toolcalls corpus (its held-out answers)")
    corpus = load_corpus("toolcalls", ckpt.config.model.block_size, data.n_records, data.seed)
    if corpus.vocab != ckpt.vocab:
        raise CdtError("the toolcalls corpus no longer matches this checkpoint's vocabulary")
    records = corpus.records[:n]
    return (*answer_templates(corpus, len(records)), records)


def evaluate_policies(ckpt: Checkpoint, policies: list[str], steps_list: list[int], n: int, batch_size: int,
                      base: SampleConfig, device: str = "auto", on_batch=None) -> list[EvalRow]:
    dev = pick_device(device)
    model = ckpt.build_model(dev)
    clean, template, protected, records = heldout_rows(ckpt, n)
    rows = []
    for policy in policies:
        for steps in steps_list:
            cfg = SampleConfig(**{**base.__dict__, "policy": policy, "steps": steps})
            cfg.validate()
            right = total = exact = valid = fields_ok = fields = 0
            passes, batches = 0, 0
            t0 = time.perf_counter()
            for lo in range(0, len(records), batch_size):
                hi = min(lo + batch_size, len(records))
                seeds = [seed_for(cfg.seed, i) for i in range(lo, hi)]
                gen = generate(model, template[lo:hi], protected[lo:hi], cfg, row_seeds=seeds)
                target = ~protected[lo:hi] & (clean[lo:hi] != PAD_ID)
                hit = (gen.tokens == clean[lo:hi]) & target
                right += int(hit.sum())
                total += int(target.sum())
                exact += int((hit.sum(1) == target.sum(1)).sum())
                passes += gen.passes["generator"] + gen.passes["critic"]
                batches += 1
                for row, rec in zip(gen.tokens, records[lo:hi]):
                    text = ckpt.vocab.decode(row).split(SEPARATOR, 1)[-1]
                    check = check_answer(rec, text)
                    valid += check.valid_json
                    fields_ok += check.name_ok + sum(check.fields.values())
                    fields += 1 + len(check.fields)
                if on_batch:
                    on_batch(hi - lo)
            m = len(records)
            rows.append(EvalRow(policy, steps, passes / batches, right / max(total, 1), exact / m, valid / m,
                                fields_ok / max(fields, 1), time.perf_counter() - t0))
    return rows
