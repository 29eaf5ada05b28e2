"""`cdt eval --scaffold`: fill only the value slots of held-out scaffolded answers and grade every field."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch

from cdt.checkpoint import Checkpoint
from cdt.data import SEPARATOR
from cdt.grading import value_spans
from cdt.model import DiffusionLM
from cdt.rng import seed_for
from cdt.sampling.heldout import HeldOut
from cdt.sampling.infill import infill
from cdt.scaffold.layout import SlotConstraint, record_schema, slot_fields
from cdt.scaffold.validate import parse
from cdt.settings import EvalSettings
from cdt.vocab import NULL_ID


@dataclass
class ScaffoldEvalRow:
    policy: str
    steps: int
    passes: float
    structure: float  # share of rows whose non-slot positions are untouched (1.0 by construction)
    json_valid: float  # share of calls that parse (1.0 by construction)
    schema_valid: float  # share of calls whose every field validates against the schema (1.0 by construction)
    type_valid: float  # share of fields whose value has the schema's type (enum member, integer, ...)
    field_exact: float  # share of fields equal to the reference
    call_exact: float  # share of calls with every field right
    null_precision: float | None  # of the slot positions left [NULL], the share the reference leaves [NULL]
    null_recall: float | None  # of the reference's [NULL] positions, the share left [NULL]
    diversity: float  # mean over generated values of distinct characters / characters
    repetition: float  # share of value characters equal to the one before (collapse: "aaaa")
    seconds: float


def iter_scaffold(model: DiffusionLM, ckpt: Checkpoint, held: HeldOut, settings: EvalSettings, maps: dict,
                  on_batch=None) -> Iterator[ScaffoldEvalRow]:
    """Each setting (policy x steps) as soon as it is finished."""
    vocab = ckpt.vocab
    spans = [value_spans(r, vocab, scaffold=True)[1] for r in held.records]
    schemas = [record_schema(r) for r in held.records]
    heads = [len(vocab.encode(r.prompt + SEPARATOR)) for r in held.records]  # where each answer starts
    constraint = SlotConstraint.of(list(zip(schemas, heads)), vocab)  # each slot in its type's language
    for cfg in settings.settings():
        n = dict.fromkeys(("structure", "json", "valid", "types", "fields", "field_ok", "calls", "pred_null", "ref_null",
                           "both_null", "values", "diversity", "chars", "repeats"), 0)
        passes = batches = 0
        t0 = time.perf_counter()
        plan = [(rows, [seed_for(cfg.seed, int(i)) for i in rows]) for rows in held.by_length(settings.batch_size)]
        for done in infill(model, held, plan, cfg, calibration=maps[cfg.policy], allow_null=True, constraint=constraint,
                           on_batch=on_batch):
            passes += done.passes
            batches += 1
            clean, prot = done.part.clean, done.part.protected
            for j, i in enumerate(done.rows.tolist()):
                row, ref = done.generation.tokens[j], clean[j]
                n["structure"] += bool(torch.equal(row[prot[j]], ref[prot[j]]))
                parsed = parse(schemas[i], vocab.decode(row[heads[i]:]))
                n["json"] += parsed.call is not None
                n["valid"] += parsed.valid
                bad = {e.split("'")[1] for e in parsed.errors if e.startswith("field '")}
                all_ok = True
                for f, (a, b) in zip(slot_fields(schemas[i]), spans[i]):
                    value, reference = vocab.decode(row[a:b]), vocab.decode(ref[a:b])  # [NULL] dropped
                    n["fields"] += 1
                    n["types"] += parsed.call is not None and f.name not in bad
                    ok = torch.equal(row[a:b], ref[a:b]) or value == reference
                    n["field_ok"] += ok
                    all_ok &= ok
                    pred_null, ref_null = row[a:b] == NULL_ID, ref[a:b] == NULL_ID
                    n["pred_null"] += int(pred_null.sum())
                    n["ref_null"] += int(ref_null.sum())
                    n["both_null"] += int((pred_null & ref_null).sum())
                    if value:
                        n["values"] += 1
                        n["diversity"] += len(set(value)) / len(value)
                        n["chars"] += len(value)
                        n["repeats"] += sum(x == y for x, y in zip(value, value[1:]))
                n["calls"] += all_ok
        m = len(held)
        yield ScaffoldEvalRow(
            cfg.policy, cfg.steps, passes / batches, n["structure"] / m, n["json"] / m, n["valid"] / m,
            n["types"] / max(n["fields"], 1), n["field_ok"] / max(n["fields"], 1), n["calls"] / m,
            n["both_null"] / n["pred_null"] if n["pred_null"] else None,
            n["both_null"] / n["ref_null"] if n["ref_null"] else None,
            n["diversity"] / max(n["values"], 1), n["repeats"] / max(n["chars"], 1), time.perf_counter() - t0)
