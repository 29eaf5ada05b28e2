"""`cdt eval`: infill held-out rows with each policy at each step count, on the same rows.

Rows carry their own seeds (one per held-out row), so every policy sees the same
rows with the same random streams, and a result does not depend on the batch size.
Settings at equal steps or equal trunk passes are then compared row by row (McNemar).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterable, Iterator

import torch

from cdt import calibration_map, checkpoint
from cdt.checkpoint import Checkpoint
from cdt.device import pick_device
from cdt.errors import UsageError
from cdt.grading import grade
from cdt.mcnemar import Paired, equal_cost_pairs
from cdt.model import DiffusionLM
from cdt.rng import seed_for
from cdt.sampling.heldout import HeldOut, load_heldout
from cdt.sampling.infill import infill
from cdt.rundir import OutputLock, check_output
from cdt.scores import ScoreWriter
from cdt.settings import EvalSettings
from cdt.vocab import Vocab


@dataclass
class RowOutcome:
    """One held-out row under one setting: what `--rows` writes and the paired comparison reads."""

    index: int  # the row's place in the held-out set (its seed and its region depend on it alone)
    exact: bool
    chars_right: int  # characters of the region restored in place (the tokens, on a character tokenizer)
    chars: int
    tokens_right: int
    tokens: int
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
    row_passes: float  # the passes a row needed (while it had [MASK] left), mean over rows: what a
    # sampler that drops finished rows would pay
    char_acc: float  # share of masked characters restored exactly
    token_acc: float | None  # share of masked tokens restored exactly (None on a character tokenizer: char_acc)
    exact: float  # share of rows whose masked region reads right ([NULL] dropped)
    json_valid: float | None  # toolcalls: share of answers that parse as JSON
    field_acc: float | None  # toolcalls: share of argument values (and tool names) right
    seconds: float
    outcomes: list[RowOutcome] = field(default_factory=list, repr=False)  # by held-out index

    @property
    def ms_per_row(self) -> float:
        return 1000.0 * self.seconds / max(len(self.outcomes), 1)

    @property
    def exact_per_pass(self) -> float:
        """Exact-match points per trunk pass a row needed: quality per unit of compute."""
        return 100.0 * self.exact / max(self.row_passes, 1e-9)

    def summary(self) -> dict:
        """The aggregate figures (a row of the table and of `--json`), without the per-row outcomes."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "outcomes"} | {
            "ms_per_row": self.ms_per_row, "exact_per_pass": self.exact_per_pass}

    def hits(self, metric: str = "exact") -> list[bool] | None:
        """Per row, whether it passed `metric` (exact | json_valid); None where the rows are not graded on it
        (JSON validity outside toolcalls)."""
        got = [getattr(o, metric) for o in self.outcomes]
        return None if any(g is None for g in got) else [bool(g) for g in got]


@dataclass
class EvalReport:
    checkpoint: str
    settings: EvalSettings
    masking: str  # what was masked: answer, random or span
    answer_tail: int  # > 0: regions do not give the answer's length
    rows: list  # EvalRow per finished setting (ScaffoldEvalRow with --scaffold), in run order
    pairs: list[Paired]  # exact match, at equal steps or passes
    pairs_json: list[Paired] | None  # JSON validity, where rows are graded on it (toolcalls)
    rows_file: str | None  # --rows
    interrupted: bool
    warnings: list[str]

    @property
    def total(self) -> int:
        return len(self.settings.policies) * len(self.settings.steps)

    @property
    def cut(self) -> str:
        """How far an interrupted run got ('' when it finished)."""
        return f"interrupted after {len(self.rows)} of {self.total} settings" if self.interrupted else ""

    def to_json(self) -> dict:
        s, b = self.settings, self.settings.sampler
        doc = {"checkpoint": self.checkpoint, "n": s.n}
        doc |= {"scaffold": True} if s.scaffold else {
            "mask": self.masking, "mask_ratio": None if self.masking == "answer" else s.mask_ratio,
            "answer_tail": self.answer_tail}
        doc |= {"commit": b.commit, "schedule": b.schedule, "temperature": b.temperature, "spread": b.spread,
                "blocks": b.blocks, "sampler": {k: v for k, v in b.to_dict().items() if k not in ("policy", "steps")}}
        if s.scaffold:
            doc["rows"] = [asdict(r) for r in self.rows]
        else:
            doc |= {"rows": [r.summary() for r in self.rows], "paired": [asdict(p) for p in self.pairs],
                    "paired_json_valid": None if self.pairs_json is None else [asdict(p) for p in self.pairs_json],
                    "rows_file": self.rows_file}
        return doc | {"interrupted": self.interrupted, "settings": self.total, "finished": len(self.rows),
                      "warnings": self.warnings}


def evaluate(source: str | Path | Checkpoint, settings: EvalSettings, rows_out: Path | None = None,
             on_batch=None, overwrite: bool = False) -> EvalReport:
    """Every policy at every step count on the same held-out rows, then the paired comparisons. Ctrl-C
    keeps the settings finished so far (`interrupted`); before the first, it is a KeyboardInterrupt."""
    settings.validate()
    sampler = settings.sampler
    if rows_out is not None and settings.scaffold:
        raise UsageError("--rows is not available with --scaffold")
    warnings = []
    with outcome_file(rows_out, note=warnings.append, overwrite=overwrite) as save_rows:  # a path that cannot be written fails first
        ckpt = checkpoint.load(source)
        replace(sampler, steps=max(settings.steps)).check_fits(ckpt.config.model.block_size)
        held = load_heldout(ckpt, settings.n, "answer" if settings.scaffold else settings.mask, settings.mask_ratio,
                            sampler.seed, scaffold=True if settings.scaffold else None)
        maps = {}
        for p in settings.policies:  # the step counts vary by setting: the sampler's other settings are compared
            maps[p], warning = calibration_map.for_sampler(ckpt.path.parent, replace(sampler, policy=p),
                                                           with_steps=False)
            warnings += [warning] if warning else []
        model = ckpt.build_model(pick_device(settings.device))
        if settings.scaffold:
            from cdt.scaffold.evaluate import iter_scaffold as iterate
        else:
            iterate = iter_policies
        rows, interrupted = finished_settings(iterate(model, ckpt, held, settings, maps, on_batch))
        if not rows:
            raise KeyboardInterrupt  # nothing finished: nothing to show or keep
        rows_path = save_rows(rows, complete=not interrupted)
    pairs, pairs_json = [], None
    if not settings.scaffold:
        pairs = equal_cost_pairs([(r.policy, r.steps, r.passes, r.hits()) for r in rows])
        json_hits = [r.hits("json_valid") for r in rows]
        if None not in json_hits:  # toolcalls answers
            pairs_json = equal_cost_pairs([(r.policy, r.steps, r.passes, h) for r, h in zip(rows, json_hits)])
    return EvalReport(str(ckpt.path), settings, held.masking, ckpt.config.data.answer_tail, rows, pairs,
                      pairs_json, None if rows_path is None else str(rows_path), interrupted, warnings)


def iter_policies(model: DiffusionLM, ckpt: Checkpoint, held: HeldOut, settings: EvalSettings, maps: dict,
                  on_batch=None) -> Iterator[EvalRow]:
    """Each setting (policy x steps) as soon as it is finished."""
    for cfg in settings.settings():
        outcomes: list[RowOutcome | None] = [None] * len(held)
        passes, batches, row_passes = 0, 0, 0
        t0 = time.perf_counter()
        plan = [(rows, [seed_for(cfg.seed, int(i)) for i in rows]) for rows in held.by_length(settings.batch_size)]
        for done in infill(model, held, plan, cfg, calibration=maps[cfg.policy],
                           allow_null=ckpt.config.data.emits_null, on_batch=on_batch):
            passes += done.passes
            batches += 1
            row_passes += int(done.generation.row_passes.sum())
            for j, i in enumerate(done.rows.tolist()):
                outcomes[i] = _outcome(ckpt.vocab, held, done.part, j, i, done.generation.tokens[j])
        yield _aggregate(cfg.policy, cfg.steps, passes / batches, row_passes / len(held), outcomes,
                         time.perf_counter() - t0, not isinstance(ckpt.vocab, Vocab))


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
def outcome_file(path: Path | None, note=None, overwrite: bool = False):
    """`--rows`: yields save(rows, complete=True), which writes one JSON line per held-out row and setting
    and returns the path written. The file is opened first, so a path that cannot be written fails before
    the evaluation runs. It appears under its name only once complete; the finished settings of an
    interrupted run stay in `<name>.partial`, and an error, or Ctrl-C before any setting finished, leaves
    nothing behind. `note` gets the line saying what a hard-killed earlier run left, if anything. An
    existing file is refused unless `overwrite`; a second run writing the same file meanwhile is refused."""
    if path is None:
        yield lambda rows, complete=True: None
        return
    check_output(path, "--rows", overwrite=overwrite)
    with OutputLock(path, "--rows"):
        writer = ScoreWriter(path)
        if writer.recovered and note is not None:
            note(writer.recovered)
        kept: list[Path] = []

        def save(rows: list[EvalRow], complete: bool = True) -> Path:
            for r in rows:
                for o in r.outcomes:
                    writer.write({"policy": r.policy, "steps": r.steps, **asdict(o)})
            kept.append(writer.close(complete=complete))
            return kept[-1]

        try:
            yield save
        finally:
            if not kept:  # not saved: nothing half-written stays, and an earlier run's .partial is left alone
                writer.close(complete=False)


def _outcome(vocab, held: HeldOut, part: HeldOut, j: int, i: int, row: torch.Tensor) -> RowOutcome:
    """Grade row j of a batch (held-out row i); exact as HeldOut.exact defines it."""
    target = part.region(j, j + 1)[0]
    right, tokens = int(((row == part.clean[j]) & target).sum()), int(target.sum())
    valid = fields_right = n_fields = None
    if held.records is not None:
        check = grade(vocab, part.records[j], row, held.scaffold)
        valid, fields_right, n_fields = check.valid_json, check.name_ok + sum(check.fields.values()), 1 + len(check.fields)
    text, reference = part.region_text(vocab, row, j)
    if isinstance(vocab, Vocab):
        chars_right, chars = right, tokens
    else:  # subword pieces: the decoded region against the reference, character by character in place
        chars_right, chars = sum(a == b for a, b in zip(text, reference)), len(reference)
    return RowOutcome(i, text == reference, chars_right, chars, right, tokens, valid, fields_right, n_fields, text,
                      reference)


def _aggregate(policy: str, steps: int, passes: float, row_passes: float, outcomes: list[RowOutcome],
               seconds: float, subword: bool = False) -> EvalRow:
    m = len(outcomes)
    graded = outcomes[0].json_valid is not None
    total = sum(o.chars for o in outcomes)
    n_fields = sum(o.fields for o in outcomes) if graded else 0
    by_token = None if not subword else sum(o.tokens_right for o in outcomes) / max(sum(o.tokens for o in outcomes), 1)
    return EvalRow(policy, steps, passes, row_passes, sum(o.chars_right for o in outcomes) / max(total, 1), by_token,
                   sum(o.exact for o in outcomes) / m,
                   sum(o.json_valid for o in outcomes) / m if graded else None,
                   sum(o.fields_right for o in outcomes) / max(n_fields, 1) if graded else None,
                   seconds, outcomes)
