"""`cdt bench bfcl`: each BFCL request gets one call from a typed scaffold of the functions it offers
(several: the name is a slot of its own), scored by BFCL's AST rules (`checker.py`), with the critic's
score of the call, so `cdt sweep-tau` can choose a threshold on BFCL outcomes."""

from __future__ import annotations

import random
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cdt import calibration_map, checkpoint
from cdt.bfcl import data
from cdt.bfcl.checker import Verdict, check_call, check_value
from cdt.calibrate import sample_scores
from cdt.data.functions import with_tools, with_type_budgets
from cdt.device import pick_device
from cdt.errors import CdtError, UsageError
from cdt.rundir import OutputLock, check_output
from cdt.sampling.loop import final_critic_probs
from cdt.scaffold.layout import check_fits, render
from cdt.scaffold.sample import fill_calls, lists_tools, separator_of
from cdt.scaffold.schema import Schema, tool_from_dict
from cdt.scores import ScoreWriter
from cdt.settings import BenchSettings


@dataclass
class Outcome:
    id: str
    category: str
    request: str
    text: str  # the generated call ("" when the request could not be scaffolded)
    ok: bool  # right by BFCL's AST rules
    kind: str  # what went wrong (checker.Verdict.kind, or unfit: the request could not be scaffolded)
    error: str
    parsed: bool
    valid: bool  # every value validates against its schema
    score: float  # the critic's score of the call (top-N mean P(wrong) over its slots); higher = more likely wrong
    arguments: dict  # expected argument -> [declared type, right]

    def to_row(self) -> dict:
        return {**asdict(self), "label": int(not self.ok), "group": self.id}


@dataclass
class CategoryResult:
    category: str
    n: int
    right: int
    parsed: int
    valid: int
    unfit: int  # requests that could not be scaffolded (too long for the block size, a name the vocabulary lacks)
    by_type: dict  # declared type -> [right, total]
    passes: float  # trunk passes per request
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.right / max(self.n, 1)

    def to_json(self) -> dict:
        scaffolded = max(self.n - self.unfit, 1)
        return {"category": self.category, "n": self.n, "accuracy": self.accuracy,
                "parse_rate": self.parsed / scaffolded, "valid_rate": self.valid / scaffolded, "unfit": self.unfit,
                "by_type": {t: {"accuracy": r / max(n, 1), "n": n} for t, (r, n) in sorted(self.by_type.items())},
                "passes": self.passes, "seconds": self.seconds}


@dataclass
class BenchReport:
    checkpoint: str
    config: dict
    results: list[CategoryResult]
    warnings: list[str] = field(default_factory=list)
    rows_file: str | None = None
    interrupted: bool = False

    @property
    def cut(self) -> str:
        """What an interrupted run kept."""
        return "interrupted; stdout has the figures so far" + (f", {self.rows_file} their rows" if self.rows_file
                                                                 else "")

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "benchmark": "bfcl", "config": self.config,
                "categories": [r.to_json() for r in self.results], "warnings": self.warnings,
                "rows_file": self.rows_file, "interrupted": self.interrupted}


def subset(items: list, n: int | None, seed: int) -> list:
    """n items chosen with the seed, in file order (all of them when n is None or at least their number)."""
    if n is None or n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def requests(settings: BenchSettings, benchmark: str = "bfcl") -> dict[str, list[data.Item]]:
    """The requests the settings choose, by category (no model is loaded)."""
    if benchmark != "bfcl":
        raise UsageError(f"unknown benchmark {benchmark!r}; cdt runs: bfcl")
    folder = data.data_dir(Path(settings.data) if settings.data else None)
    return {c: subset(data.load(folder, c), settings.n, settings.sampler.seed) for c in settings.categories}


def bench(source, settings: BenchSettings, rows_out: Path | None = None, overwrite: bool = False,
          on_batch=None, chosen: dict | None = None, on_outcome=None) -> BenchReport:
    """Every chosen request (`requests`) of every category, in batches; `on_batch(k)` after each k requests,
    `on_outcome(outcome)` after each request."""
    chosen = chosen if chosen is not None else requests(settings)
    if rows_out is not None:
        check_output(rows_out, "--rows", overwrite=overwrite)
    ckpt = checkpoint.load(source)
    cfg = settings.sampler.for_checkpoint(ckpt)
    warnings = [] if ckpt.config.data.scaffold else [
        f"{ckpt.path} was trained without scaffolds; train one with cdt train --data functions --scaffold"]
    if not ckpt.vocab.reads_every_character:
        warnings.append("this model's vocabulary has no fallback character: requests with characters outside it "
                        "are counted wrong (unfit)")
    model = ckpt.build_model(pick_device(settings.device))
    calibration, warning = calibration_map.for_sampler(ckpt.path.parent, cfg)
    warnings += [warning] if warning else []
    notes: list[str] = []
    report = BenchReport(str(ckpt.path), {**settings.to_dict(), "sampler": cfg.to_dict()}, [], warnings)
    with ExitStack() as stack:
        writer = None
        if rows_out is not None:
            stack.enter_context(OutputLock(rows_out, "--rows"))
            writer = ScoreWriter(rows_out)
        finished = False
        try:
            for category, items in chosen.items():
                result = CategoryResult(category, 0, 0, 0, 0, 0, {}, 0.0, 0.0)
                report.results.append(result)  # before it runs: an interrupted category keeps its figures so far
                t0, passes = time.perf_counter(), 0.0
                for lo in range(0, len(items), settings.batch_size):
                    batch = items[lo : lo + settings.batch_size]
                    outcomes, spent = _run_batch(model, ckpt, batch, category, cfg, settings.top, calibration, notes)
                    passes += spent * len(batch)
                    for o in outcomes:
                        _count(result, o)
                        if on_outcome:
                            on_outcome(o)
                        if writer is not None:
                            writer.write(o.to_row())
                    result.passes, result.seconds = passes / max(result.n, 1), time.perf_counter() - t0
                    if on_batch:
                        on_batch(len(batch))
            finished = True
        except KeyboardInterrupt:
            report.interrupted = True
        finally:  # complete, the rows file; otherwise (Ctrl-C, an error) the rows so far as <name>.partial
            if writer is not None:
                path = writer.close(complete=finished)
                report.rows_file = str(path) if path else None
    report.warnings += sorted(set(notes))[:5] + ([f"... and {len(set(notes)) - 5} more schema notes"]
                                                 if len(set(notes)) > 5 else [])
    return report


def _count(result: CategoryResult, o: Outcome) -> None:
    result.n += 1
    result.right += o.ok
    result.parsed += o.parsed
    result.valid += o.valid
    result.unfit += o.kind == "unfit"
    for kind, right in o.arguments.values():
        result.by_type.setdefault(kind, [0, 0])[0] += right
        result.by_type[kind][1] += 1


def tools_of(item: data.Item, notes: list[str]) -> list[Schema]:
    """The item's functions as scaffold schemas, with the slot budgets the functions corpus trains."""
    return [with_type_budgets(tool_from_dict(f, f"{item.id} {f.get('name')}", notes)) for f in item.functions]


def _fits(item: data.Item, tools: list[Schema], ckpt, separator: str) -> str:
    """Why the item cannot be scaffolded for this model ("" when it can)."""
    vocab, block = ckpt.vocab, ckpt.config.model.block_size
    if vocab.fallback is None and (bad := vocab.unknown(item.request)):
        return f"characters outside the model's vocabulary: {', '.join(map(repr, bad[:5]))}"
    names = [t.tool for t in tools] if lists_tools(ckpt) else []
    head = len(vocab.encode(with_tools(item.request, names) + separator))
    try:
        for t in tools:
            check_fits(t, vocab)
            if head + len(render(t, vocab)[0]) > block:
                return f"request plus the {t.tool} scaffold exceed the block size {block}"
    except CdtError as e:
        return str(e)
    return ""


def _run_batch(model, ckpt, batch: list, category: str, cfg, top: int, calibration, notes) -> tuple[list, float]:
    """Outcomes of a batch of items, and the trunk passes spent per item."""
    separator = separator_of(ckpt)
    tools = [tools_of(item, notes) for item in batch]
    reasons = [_fits(item, t, ckpt, separator) for item, t in zip(batch, tools)]
    runnable = [i for i, r in enumerate(reasons) if not r]
    outcomes: dict[int, Outcome] = {}
    for i, reason in enumerate(reasons):
        if reason:
            outcomes[i] = _outcome(batch[i], category, "", None, Verdict(False, reason, "unfit"), False, False, 1.0)
    spent = 0.0
    if runnable:
        rows = [(batch[i].request, tools[i]) for i in runnable]
        calls = fill_calls(model, ckpt.vocab, rows, cfg, separator, ckpt.config.model.block_size, calibration,
                           list_tools=lists_tools(ckpt))
        probs, extra = final_critic_probs(model, calls.generation)
        spent = (sum(calls.generation.passes.values()) + extra) * len(runnable) / len(batch)
        for j, (i, c) in enumerate(zip(runnable, calls.calls)):
            item = batch[i]
            score = 1.0 if probs is None else sample_scores(probs[j][calls.filled[j]].cpu().numpy(), top)["score"]
            verdict = check_call(item.functions, c.parsed.call, item.expected)
            outcomes[i] = _outcome(item, category, c.text, c.parsed.call, verdict, c.parsed.call is not None,
                                   c.parsed.valid, score)
    return [outcomes[i] for i in range(len(batch))], spent


def _outcome(item: data.Item, category: str, text: str, call: dict | None, verdict: Verdict, parsed: bool,
             valid: bool, score: float) -> Outcome:
    name, possible = next(iter(item.expected.items()))
    spec = next(f for f in item.functions if f["name"] == name)["parameters"]["properties"]
    call = call or {}
    given = (call.get("arguments") or {}) if call.get("name") == name else None  # None: the wrong function
    arguments = {}
    for param, options in possible.items():
        prop = spec.get(param, {})
        if given is None:
            right = False
        elif given.get(param) is None:
            right = "" in options or (param in given and None in options)
        else:
            right = check_value(prop, param, given[param], options).ok
        arguments[param] = [str(prop.get("type", "any")), bool(right)]
    return Outcome(item.id, category, item.request, text, verdict.ok, verdict.kind, verdict.error, parsed, valid,
                   float(score), arguments)
