"""`cdt eval`: infill held-out rows with each policy at each step count, on the same rows.

Rows carry their own seeds (one per held-out row), so every policy sees the same
rows with the same random streams, and a result does not depend on the batch size.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator

import torch

from cdt import calibration_map
from cdt.checkpoint import Checkpoint
from cdt.device import pick_device
from cdt.errors import CdtError, UsageError
from cdt.rng import seed_for
from cdt.sampling.heldout import HeldOut, grade
from cdt.sampling.loop import SampleConfig, generate
from cdt.scores import ScoreWriter


@dataclass
class RowOutcome:
    """One held-out row under one setting: what `--rows` writes and the paired comparison reads."""

    index: int  # the row's place in the held-out set (its seed and its region depend on it alone)
    exact: bool
    chars_right: int
    chars: int
    json_valid: bool | None
    fields_right: int | None  # tool name and argument values
    fields: int | None
    text: str  # the generated region, [NULL] dropped
    reference: str


@dataclass
class EvalRow:
    policy: str
    steps: int
    passes: float  # trunk passes per generation (generator + critic), mean over batches
    char_acc: float  # share of masked characters restored exactly
    exact: float  # share of rows whose masked region reads right ([NULL] dropped)
    json_valid: float | None  # toolcalls: share of answers that parse as JSON
    field_acc: float | None  # toolcalls: share of argument values (and tool names) right
    seconds: float
    outcomes: list[RowOutcome] = field(default_factory=list, repr=False)  # by held-out index

    def summary(self) -> dict:
        """The aggregate figures (a row of the table and of `--json`), without the per-row outcomes."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "outcomes"}

    def hits(self, metric: str = "exact") -> list[bool] | None:
        """Per row, whether it passed `metric` (exact | json_valid); None where the rows are not graded on it
        (JSON validity outside toolcalls)."""
        got = [getattr(o, metric) for o in self.outcomes]
        return None if any(g is None for g in got) else [bool(g) for g in got]


def evaluate_policies(ckpt: Checkpoint, held: HeldOut, policies: list[str], steps_list: list[int],
                      batch_size: int, base: SampleConfig, device: str = "auto", on_batch=None) -> list[EvalRow]:
    return list(iter_policies(ckpt, held, policies, steps_list, batch_size, base, device, on_batch))


def iter_policies(ckpt: Checkpoint, held: HeldOut, policies: list[str], steps_list: list[int],
                  batch_size: int, base: SampleConfig, device: str = "auto", on_batch=None) -> Iterator[EvalRow]:
    """Each setting (policy x steps) as soon as it is finished, every policy at one step count before the next."""
    model = ckpt.build_model(pick_device(device))
    for steps in steps_list:  # every policy at the fewest steps first: an interrupted run still compares them
        for policy in policies:
            cfg = SampleConfig(**{**base.__dict__, "policy": policy, "steps": steps})
            cfg.validate()
            calibration, _ = calibration_map.for_policy(ckpt.path.parent, policy)  # the CLI prints the warning
            outcomes: list[RowOutcome | None] = [None] * len(held)
            passes, batches = 0, 0
            t0 = time.perf_counter()
            for index, part in held.batches(batch_size):
                seeds = [seed_for(cfg.seed, int(i)) for i in index]
                gen = generate(model, part.template, part.protected, cfg, row_seeds=seeds,
                               calibration=calibration, allow_null=ckpt.config.data.emits_null)
                passes += gen.passes["generator"] + gen.passes["critic"]
                batches += 1
                for j, i in enumerate(index.tolist()):
                    outcomes[i] = _outcome(ckpt.vocab, held, part, j, i, gen.tokens[j])
                if on_batch:
                    on_batch(len(index))
            yield _aggregate(policy, steps, passes / batches, outcomes, time.perf_counter() - t0)


def finished_settings(settings: Iterable) -> tuple[list, bool]:
    """Every setting `settings` yields until Ctrl-C, and whether Ctrl-C cut the run short: an interrupted
    evaluation still reports what it finished."""
    done = []
    try:
        for row in settings:
            done.append(row)
    except KeyboardInterrupt:
        return done, True
    return done, False


@contextmanager
def outcome_file(path: Path | None, note=None):
    """`--rows`: yields save(rows, complete=True), which writes one JSON line per held-out row and setting
    and returns the path written. The file is opened first, so a path that cannot be written fails before
    the evaluation runs. It appears under its name only once complete; the finished settings of an
    interrupted run stay in `<name>.partial`, and an error, or Ctrl-C before any setting finished, leaves
    nothing behind. `note` gets the line saying what a hard-killed earlier run left, if anything."""
    if path is None:
        yield lambda rows, complete=True: None
        return
    if path.exists():
        raise UsageError(f"{path} exists; --rows writes a new file (choose another name or delete it)")
    try:
        writer = ScoreWriter(path)
    except OSError as e:
        raise CdtError(f"cannot write {path}: {e.strerror}") from None
    if writer.recovered and note is not None:
        note(writer.recovered)

    def save(rows: list[EvalRow], complete: bool = True) -> Path:
        for r in rows:
            for o in r.outcomes:
                writer.write({"policy": r.policy, "steps": r.steps, **asdict(o)})
        kept.append(writer.close(complete=complete))
        return kept[-1]

    kept: list[Path] = []
    try:
        yield save
    finally:
        if not kept:  # not saved: nothing half-written stays, and an earlier run's .partial is left alone
            writer.close(complete=False)


def _outcome(vocab, held: HeldOut, part: HeldOut, j: int, i: int, row: torch.Tensor) -> RowOutcome:
    """Grade row j of a batch (held-out row i); exact as HeldOut.exact defines it."""
    target = part.region(j, j + 1)[0]
    right = int(((row == part.clean[j]) & target).sum())
    valid = fields_right = n_fields = None
    if held.records is not None:
        check = grade(vocab, part.records[j], row, held.scaffold)
        valid, fields_right, n_fields = check.valid_json, check.name_ok + sum(check.fields.values()), 1 + len(check.fields)
    text, reference = part.region_text(vocab, row, j)
    return RowOutcome(i, text == reference, right, int(target.sum()), valid, fields_right, n_fields, text, reference)


def _aggregate(policy: str, steps: int, passes: float, outcomes: list[RowOutcome], seconds: float) -> EvalRow:
    m = len(outcomes)
    graded = outcomes[0].json_valid is not None
    total = sum(o.chars for o in outcomes)
    n_fields = sum(o.fields for o in outcomes) if graded else 0
    return EvalRow(policy, steps, passes, sum(o.chars_right for o in outcomes) / max(total, 1),
                   sum(o.exact for o in outcomes) / m,
                   sum(o.json_valid for o in outcomes) / m if graded else None,
                   sum(o.fields_right for o in outcomes) / max(n_fields, 1) if graded else None,
                   seconds, outcomes)


# scaffolds


@dataclass
class ScaffoldEvalRow:
    policy: str
    steps: int
    passes: float
    structure: float  # share of rows whose non-slot positions are untouched (1.0 by construction)
    json_valid: float  # share of calls that parse
    type_valid: float  # share of fields whose value has the schema's type (enum member, integer, ...)
    field_exact: float  # share of fields equal to the reference
    call_exact: float  # share of calls with every field right
    null_precision: float | None  # of the slot positions left [NULL], the share the reference leaves [NULL]
    null_recall: float | None  # of the reference's [NULL] positions, the share left [NULL]
    diversity: float  # mean over generated values of distinct characters / characters
    repetition: float  # share of value characters equal to the one before (collapse: "aaaa")
    seconds: float


def _value_chars(vocab, ids) -> str:
    return vocab.decode(ids)  # [NULL] dropped


def iter_scaffold(ckpt: Checkpoint, held: HeldOut, policies: list[str], steps_list: list[int], batch_size: int,
                  base: SampleConfig, device: str = "auto", on_batch=None) -> Iterator[ScaffoldEvalRow]:
    """Infill only the value slots of held-out scaffolded answers and grade every field; each setting as
    soon as it is finished."""
    from cdt import scaffold
    from cdt.data import SEPARATOR
    from cdt.train import value_spans
    from cdt.vocab import NULL_ID

    model = ckpt.build_model(pick_device(device))
    vocab = ckpt.vocab
    spans = [value_spans(r, vocab, scaffold=True)[1] for r in held.records]
    schemas = [scaffold.builtin(r.tool) for r in held.records]
    heads = [len(vocab.encode(r.prompt + SEPARATOR)) for r in held.records]  # where each answer starts
    allowed = scaffold.allowed_rows(schemas, heads, held.template.shape[1], vocab)  # what each slot may hold
    for steps in steps_list:  # every policy at the fewest steps first: an interrupted run still compares them
        for policy in policies:
            cfg = SampleConfig(**{**base.__dict__, "policy": policy, "steps": steps})
            cfg.validate()
            calibration, _ = calibration_map.for_policy(ckpt.path.parent, policy)
            n = dict.fromkeys(("structure", "json", "types", "fields", "field_ok", "calls", "pred_null", "ref_null",
                               "both_null", "values", "diversity", "chars", "repeats"), 0)
            passes = batches = 0
            t0 = time.perf_counter()
            for index, part in held.batches(batch_size):
                seeds = [seed_for(cfg.seed, int(i)) for i in index]
                gen = generate(model, part.template, part.protected, cfg, row_seeds=seeds, calibration=calibration,
                               allow_null=True, allowed_at=allowed[index, : part.template.shape[1]])
                passes += gen.passes["generator"] + gen.passes["critic"]
                batches += 1
                clean, prot = part.clean, part.protected
                for j, i in enumerate(index.tolist()):
                    row, ref = gen.tokens[j], clean[j]
                    n["structure"] += bool(torch.equal(row[prot[j]], ref[prot[j]]))
                    head = heads[i]
                    parsed = scaffold.parse(schemas[i], _value_chars(vocab, row[head:]))
                    n["json"] += parsed.call is not None
                    bad = {e.split("'")[1] for e in parsed.errors if e.startswith("field '")}
                    all_ok = True
                    for f, (a, b) in zip(schemas[i].fields, spans[i]):
                        n["fields"] += 1
                        n["types"] += parsed.call is not None and f.name not in bad
                        ok = torch.equal(row[a:b], ref[a:b]) or _value_chars(vocab, row[a:b]) == _value_chars(vocab, ref[a:b])
                        n["field_ok"] += ok
                        all_ok &= ok
                        pred_null, ref_null = row[a:b] == NULL_ID, ref[a:b] == NULL_ID
                        n["pred_null"] += int(pred_null.sum())
                        n["ref_null"] += int(ref_null.sum())
                        n["both_null"] += int((pred_null & ref_null).sum())
                        value = _value_chars(vocab, row[a:b])
                        if value:
                            n["values"] += 1
                            n["diversity"] += len(set(value)) / len(value)
                            n["chars"] += len(value)
                            n["repeats"] += sum(x == y for x, y in zip(value, value[1:]))
                    n["calls"] += all_ok
                if on_batch:
                    on_batch(len(index))
            m = len(held)
            yield ScaffoldEvalRow(
                policy, steps, passes / batches, n["structure"] / m, n["json"] / m, n["types"] / max(n["fields"], 1),
                n["field_ok"] / max(n["fields"], 1), n["calls"] / m,
                n["both_null"] / n["pred_null"] if n["pred_null"] else None,
                n["both_null"] / n["ref_null"] if n["ref_null"] else None,
                n["diversity"] / max(n["values"], 1), n["repeats"] / max(n["chars"], 1), time.perf_counter() - t0)
