"""The `cdt` command line: flags -> config dataclasses -> library call -> rich or --json.

Results go to stdout, diagnostics and progress to stderr. Exit codes: 0 success,
1 runtime failure (one-line cause on stderr), 2 usage error.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from cdt.errors import CdtError

EXAMPLE_PROMPT = "Set an alarm for 7:30 pm called gym"
EXAMPLE_ANSWER = '{"name": "set_alarm", "arguments": {"time": "19:30", "label": "gym"}}'

# the registered policies (cdt.sampling.policies.POLICIES), spelled out so that --help does not import torch;
# a test keeps the two in step
POLICY_NAMES = "random, confidence, margin, entropy, rcr, critic, critic-calibrated, critic-confidence"
SCHEDULE_HELP = ("How many positions stay masked after each step: linear (the same share each step) | cosine "
                 "(few first, most at the end) | power:P (a share (1 - s/T)^P still masked after step s of T; "
                 "P > 1 commits most at first and few at the end, when nothing is left to check them, and can "
                 "finish before step T).")
SCAFFOLD_BLOCK = 288  # longest scaffolded toolcalls row (265) plus room

app = typer.Typer(
    help="Masked diffusion language models with a learned token critic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out_console = Console()
err_console = Console(stderr=True)


def _print_version(given: bool) -> None:
    if given:
        from cdt import __version__

        out_console.print(f"cdt {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print cdt's version and exit."),
) -> None:
    """Masked diffusion language models with a learned token critic.

    Critic polarity everywhere: a higher critic probability means the token is more likely wrong.
    """


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def friendly_errors(fn):
    """Turn expected failures into a one-line message and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CdtError as e:
            raise fail(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 1) from None

    return wrapper


def warn(message: str | None) -> None:
    if message:
        err_console.print(f"[bold yellow]warning:[/bold yellow] {escape(message)}", highlight=False, soft_wrap=True)


def emit_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


@app.command()
@friendly_errors
def train(
    preset: Optional[str] = typer.Option(None, help="Preset: tiny (tests, seconds), small (default, ~11 min on 2 CPU "
                                         "cores), long (small, ~3x the steps, ~33 min), copy_long (long with AdamW, "
                                         "~35 min), base (GPU), critic_pairwise (--stage critic)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with model/data/train sections; overrides the preset."),
    data: Optional[str] = typer.Option(None, help="'toolcalls' (embedded corpus) or the path of a UTF-8 text file."),
    out: Optional[Path] = typer.Option(None, help="Run directory for checkpoint, config.yaml and metrics.jsonl [default: runs/PRESET-TIMESTAMP]."),
    max_iters: Optional[int] = typer.Option(None, min=1, help="Optimizer steps in total (a resumed run counts the earlier ones)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Rows per step."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Peak learning rate (of every parameter with adamw; of the "
                                       "embedding, norms and heads with muon)."),
    optimizer: Optional[str] = typer.Option(None, help="muon (default): Muon on the trunk's matrices (peak rate "
                                            "train.muon_lr), AdamW on the rest; or adamw on every parameter."),
    seed: Optional[int] = typer.Option(None, help="Training seed: batches, masks, critic fills."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (bf16 autocast on CUDA, fp32 on CPU)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the training step; falls back to eager "
                                                           "with a message where it fails (often slower on CPU)."),
    eval_interval: Optional[int] = typer.Option(None, min=1, help="Steps between validation passes and checkpoints."),
    set_: List[str] = typer.Option([], "--set", help="Any config value, SECTION.KEY=VALUE (e.g. model.critic=mlp); repeatable."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped, with the settings it "
                                "was trained with; flags given with it change them."),
    scaffold: bool = typer.Option(False, "--scaffold", help="Train on toolcalls answers in the schema-scaffold layout "
                                                            "(only value slots masked; block size at least 288)."),
    stage: str = typer.Option("generator", help="generator: the diffusion model and token critic; critic: the "
                                                "sequence-level value head (higher value = more likely right) on "
                                                "pairs from --samples, starting from --init."),
    samples: Optional[Path] = typer.Option(None, help="--stage critic: a cdt calibrate scores file (--samples-per-prompt K)."),
    init: Optional[Path] = typer.Option(None, help="--stage critic: the checkpoint (or run directory) to start from."),
    loss: Optional[str] = typer.Option(None, help="--stage critic: pairwise (default) or pointwise (BCE baseline)."),
    # two plain flags, not a --freeze-trunk/--train-trunk pair: a pair takes a --help column of its own
    freeze: bool = typer.Option(False, "--freeze-trunk", help="--stage critic: train the value head alone (default)."),
    train_trunk: bool = typer.Option(False, "--train-trunk", help="--stage critic: train the trunk too."),
    value_dropout: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="--stage critic: dropout in the value head."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout and nothing else there."),
):
    """Train the generator and the critic on one shared trunk.

    With no arguments: the small preset on the embedded toolcalls corpus. Ctrl-C or
    SIGTERM saves a checkpoint first; --resume continues it bit for bit.
    """
    from cdt import checkpoint
    from cdt.config import parse_override, resolve
    from cdt.render import TrainProgress, train_summary
    from cdt.train import train as run_train

    if freeze and train_trunk:
        raise fail("give at most one of --freeze-trunk and --train-trunk", 2)
    freeze_trunk = True if freeze else False if train_trunk else None
    flags = {"data": {"source": data}, "model": {},
             "train": {"max_iters": max_iters, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "seed": seed,
                       "device": device, "eval_interval": eval_interval, "compile": compile_ or None}}
    overrides = [{s: {k: v for k, v in kv.items() if v is not None} for s, kv in flags.items()}]
    if stage not in ("generator", "critic"):
        raise fail(f"unknown stage {stage!r}; choose generator or critic", 2)
    # a flag of the other stage is refused, not silently dropped
    generator_only = {"--optimizer": optimizer, "--data": data, "--compile": compile_ or None,
                      "--scaffold": scaffold or None, "--resume": resume or None}
    critic_only = {"--samples": samples, "--init": init, "--loss": loss,
                   "--freeze-trunk": freeze or None, "--train-trunk": train_trunk or None,
                   "--value-dropout": value_dropout}
    other_stage = generator_only if stage == "critic" else critic_only
    if misplaced := [name for name, value in other_stage.items() if value is not None]:
        raise fail(f"{', '.join(misplaced)}: not used by --stage {stage}; "
                   f"{'leave it out' if len(misplaced) == 1 else 'leave them out'}", 2)
    if stage == "critic":
        stage_flags = {"samples": str(samples) if samples else None, "init": str(init) if init else None,
                       "loss": loss, "freeze_trunk": freeze_trunk, "lr": lr, "max_iters": max_iters,
                       "batch_size": batch_size, "seed": seed, "eval_interval": eval_interval}
        overrides = [{"critic_stage": {k: v for k, v in stage_flags.items() if v is not None},
                      "model": {} if value_dropout is None else {"value_dropout": value_dropout},
                      "train": {} if device is None else {"device": device}}]
        overrides += [parse_override(item) for item in set_]
        return _train_critic_stage(resolve(preset, config, overrides), out, json_out)
    if scaffold:  # scaffolded rows are up to 265 characters; the flag alone must be enough to train
        overrides.append({"data": {"scaffold": True}})
    overrides += [parse_override(item) for item in set_]
    if resume and out is None:
        raise fail("--resume needs --out DIR, the run directory to continue", 2)
    # a resumed run keeps the settings it was trained with; flags given with --resume change them
    cfg = resolve(preset, config, overrides, base=checkpoint.load(out).config if resume else None)
    if scaffold and not any(item.strip().startswith("model.block_size") for item in set_):
        cfg.model.block_size = max(cfg.model.block_size, SCAFFOLD_BLOCK)
    if out is None:
        out = Path("runs") / f"{preset or 'small'}-{time.strftime('%Y%m%d-%H%M%S')}"
    from cdt.distributed import dist_info

    main_rank = dist_info().is_main  # under torchrun only rank 0 reports
    result = run_train(cfg, out, resume=resume, reporter=TrainProgress(err_console) if main_rank and not json_out else None)
    if not main_rank:
        return
    example_length = len(EXAMPLE_ANSWER) + cfg.data.answer_tail // 2  # a tail model takes a budget: [NULL] ends it
    train_on = f"cdt train --out {out} --resume --max-iters {result.max_iters * 2}   # train on: the rate schedule is re-spread over the new total"
    next_commands = [
        f"cdt eval --checkpoint {out} --n 128   # compare remasking policies on held-out answers",
        f"cdt calibrate --checkpoint {out} --n-samples 200   # can the critic's P(wrong) be trusted?",
        f"cdt sample --checkpoint {out} --prompt {EXAMPLE_PROMPT!r} --length {example_length} --policy critic",
        train_on,
    ] if cfg.data.source == "toolcalls" else [
        f"cdt sample --checkpoint {out} --length 64",
        f"cdt calibrate --checkpoint {out} --n-samples 200   # can the critic's P(wrong) be trusted?",
        train_on,
    ]
    if json_out:
        doc = asdict(result)
        doc.update(run_dir=str(out), checkpoint=str(result.checkpoint), config=cfg.to_dict())
        emit_json(doc)
    else:
        out_console.print(train_summary(result, next_commands, ema=cfg.train.ema), soft_wrap=True, end="")
    if result.interrupted:
        raise fail(f"stopped by {result.interrupted} at step {result.step}; checkpoint saved; "
                   f"resume with: cdt train --out {out} --resume", 1)


def _train_critic_stage(cfg, out: Optional[Path], json_out: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cdt.render import stage_line, stage_summary
    from cdt.value_stage import train_value_stage

    out = out or Path("runs") / f"critic-{time.strftime('%Y%m%d-%H%M%S')}"
    with Progress(TextColumn("[bold]critic stage"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  console=err_console, disable=json_out or not err_console.is_terminal) as progress:
        task = progress.add_task("stage", total=cfg.critic_stage.max_iters, status="")
        result = train_value_stage(
            cfg, out,
            on_step=lambda step, loss: progress.update(task, completed=step, status=f"loss {loss:.4f}"),
            on_eval=lambda r: None if json_out else progress.console.print(stage_line(r), highlight=False,
                                                                           soft_wrap=True))
    if json_out:
        emit_json(asdict(result) | {"run_dir": str(out)})
    else:
        out_console.print(stage_summary(result, out), soft_wrap=True, end="")
    if result.interrupted:
        raise fail(f"stopped by {result.interrupted} at step {result.steps} of {result.max_iters}; the value head as "
                   f"it was then is saved in {result.checkpoint}", 1)


@app.command()
@friendly_errors
def sample(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or the run directory that holds it."),
    prompt: str = typer.Option("", help="Protected text; for toolcalls models, the request."),
    length: int = typer.Option(96, min=1, help="Characters to generate after the prompt (a model trained with "
                               "data.answer_tail takes it as a budget: it ends the answer with [NULL], never printed)."),
    n: int = typer.Option(1, "--n", min=1, help="Rows generated in one batch (each with its own seeded draws)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps [default: the checkpoint's sample.steps, 16]."),
    policy: str = typer.Option("confidence", help=f"Remasking policy: {POLICY_NAMES}."),
    commit: str = typer.Option("remask", help="remask (committed tokens may be remasked), lock (final once "
                                               "committed), threshold (commit all above --threshold)."),
    threshold: float = typer.Option(0.9, min=0.0, max=1.0, help="threshold mode: confidence (1 - score) needed to commit."),
    schedule: str = typer.Option("linear", help=SCHEDULE_HELP),
    temperature: float = typer.Option(1.0, min=0.0, help="Generator temperature; 0 = greedy."),
    top_k: int = typer.Option(0, min=0, help="Sample among the k most likely characters; 0 = off."),
    top_p: float = typer.Option(1.0, min=0.0, max=1.0, help="Nucleus sampling mass; 1 = off."),
    randomness: float = typer.Option(0.0, min=0.0, max=1.0, help="Blend scores with noise: (1-r)*score + r*U."),
    selection: str = typer.Option("topk", help="topk: remask the worst; gumbel: sample them, p ~ score."),
    spread: bool = typer.Option(False, "--spread", help="Never commit two adjacent new tokens in one step: the "
                                                        "best of each run of masked neighbours goes first "
                                                        "(remask and lock modes; threshold ignores it)."),
    blocks: int = typer.Option(1, min=1, help="Semi-autoregressive (LLaDA): fill the region in this many "
                                              "left-to-right blocks, each with its share of the steps; 1 = off."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same output."),
    schema: Optional[str] = typer.Option(None, help="Fill the value slots of a built-in toolcalls tool's scaffold "
                                                    "(e.g. get_weather); Python writes the JSON structure."),
    schema_file: Optional[Path] = typer.Option(None, help="Like --schema, from a JSON Schema file (an object schema)."),
    budget: List[str] = typer.Option([], help="Slot size, FIELD=N or N for every field (scaffolds; repeatable)."),
    prompts_file: Optional[str] = typer.Option(None, help="One request per line ('-' = stdin), each generated "
                                                          "as --prompt would be; prints JSON lines: one per row "
                                                          "(prompt, row, text; --json adds critic_probs), or one "
                                                          "per request with --schema."),
    lock_threshold: float = typer.Option(0.9, min=0.0, max=1.0, help="rcr policy: confidence at which a position locks."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    show_steps: bool = typer.Option(False, "--show-steps", help="Print the denoising trajectory (stderr)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document: text, per-token critic P(wrong), passes."),
):
    """Generate by iterative unmasking, one line of text per row on stdout.

    A newline the model generates inside a row is written as \\n (a backslash as \\\\);
    --json gives the raw text.

    Critic probabilities in --json are P(token is wrong): higher = more likely wrong.
    """
    from cdt import checkpoint as ckpt_mod
    from cdt.render import trajectory
    from cdt.sampling.loop import SampleConfig
    from cdt.sampling.run import sample_each

    cfg = SampleConfig(steps=steps or blocks, policy=policy, commit=commit, threshold=threshold, schedule=schedule,
                       temperature=temperature, top_k=top_k, top_p=top_p, randomness=randomness, blocks=blocks,
                       selection=selection, spread=spread, seed=seed, lock_threshold=lock_threshold)
    cfg.validate()  # the checkpoint's step count, when --steps is not given, is checked once it is read
    if prompt and prompts_file:
        raise fail("give --prompt or --prompts-file, not both", 2)
    if schema or schema_file:
        return _sample_scaffold(checkpoint, cfg, steps, prompt, schema, schema_file, budget, prompts_file, device,
                                show_steps, json_out)
    prompts = _prompt_lines(prompts_file) if prompts_file else [prompt]
    ckpt = ckpt_mod.load(checkpoint)
    cfg.steps = steps or ckpt.config.sample.steps
    results = sample_each(ckpt, prompts, length, n, cfg, device=device, record=show_steps)
    if prompts_file:
        return _sample_lines(results, len(prompts), show_steps, json_out, ckpt.vocab)
    result = next(results)
    for w in result.warnings:
        warn(w)
    if show_steps:
        err_console.print(trajectory(result, ckpt.vocab, plain=not err_console.is_terminal), soft_wrap=True,
                          highlight=False)
    if json_out:
        emit_json({
            "checkpoint": str(ckpt.path), "prompt": prompt, "config": asdict(cfg),
            "passes": result.generation.passes, "report_passes": result.report_passes,
            "critic_polarity": "probability that the token is wrong (higher = more likely wrong)",
            "samples": [{"row": i, "text": t,
                         "critic_probs": None if result.critic_probs is None else [round(p, 5) for p in result.critic_probs[i]]}
                        for i, t in enumerate(result.texts)],
        })
    else:
        for text in result.texts:  # one line per row, whatever the model generated
            sys.stdout.write(text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") + "\n")


def _sample_lines(results, total: int, show_steps: bool, json_out: bool, vocab) -> None:
    """`cdt sample --prompts-file` without a schema: one JSON line per row, written as each request finishes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from cdt.render import trajectory

    with Progress(TextColumn("[bold]sample"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, disable=not err_console.is_terminal, transient=True) as progress:
        task = progress.add_task("sample", total=total)
        for i, result in enumerate(results):
            if i == 0:
                for w in result.warnings:  # the same for every request
                    warn(w)
            if show_steps:
                progress.console.print(trajectory(result, vocab, plain=not err_console.is_terminal), soft_wrap=True,
                                       highlight=False)
            for row, text in enumerate(result.texts):
                doc = {"prompt": result.prompt, "row": row, "text": text}
                if json_out:
                    doc["critic_probs"] = (None if result.critic_probs is None
                                           else [round(p, 5) for p in result.critic_probs[row]])
                sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            progress.advance(task)


def _budgets(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out[name if sep else "*"] = int(value)
        except ValueError:
            raise fail(f"--budget expects FIELD=N or N, got {item!r}", 2) from None
    return out


def _sample_scaffold(checkpoint, cfg, steps, prompt, schema, schema_file, budget, prompts_file, device, show_steps,
                     json_out):
    """`cdt sample --schema/--schema-file`: scaffolded calls, validated against the schema."""
    from cdt import checkpoint as ckpt_mod
    from cdt import scaffold
    from cdt.render import slot_trajectory
    from cdt.sampling.run import sample_schema

    if bool(schema) == bool(schema_file):
        raise fail("give exactly one of --schema NAME or --schema-file FILE", 2)
    spec = scaffold.builtin(schema) if schema else scaffold.from_json_schema(schema_file)
    spec = scaffold.with_budgets(spec, _budgets(budget))
    prompts = _prompt_lines(prompts_file) if prompts_file else [prompt]
    ckpt = ckpt_mod.load(checkpoint)
    cfg.steps = steps or ckpt.config.sample.steps
    for p in prompts:
        ckpt.vocab.encode(p)  # characters outside the vocabulary: one clear error before any work
    if not ckpt.config.data.scaffold:
        warn(f"{ckpt.path} was trained without scaffolds: it has not learned the slot layout or to end a value "
             "with [NULL], so expect filled-up slots; train one with cdt train --scaffold")
    result = sample_schema(ckpt, spec, prompts, cfg, device, record=show_steps)
    samples, gen = result.samples, result.generation
    for w in result.warnings:
        warn(w)
    for i, s in enumerate(samples):
        for e in s.errors:
            warn(f"row {i}: {e}")
    docs = [{"prompt": s.prompt, "text": s.text, "call": s.call, "valid": s.valid, "errors": s.errors}
            for s in samples]
    if prompts_file:
        for d in docs:
            sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
    elif json_out:
        emit_json({"checkpoint": str(ckpt.path), "schema": spec.tool, "config": asdict(cfg), "passes": gen.passes,
                   "samples": docs})
    else:
        for s in samples:
            sys.stdout.write(s.text + "\n")
    if show_steps:
        err_console.print(slot_trajectory(gen, [s.start for s in samples], ckpt.vocab, plain=not err_console.is_terminal),
                          soft_wrap=True, highlight=False)


def _prompt_lines(prompts_file: str) -> list[str]:
    """The non-blank lines of --prompts-file ('-' = stdin), one request each."""
    lines = (sys.stdin.read() if prompts_file == "-" else _read_prompts(prompts_file)).splitlines()
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise fail(f"no requests in {prompts_file}", 1)
    return prompts


def _read_prompts(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise fail(f"prompts file not found: {path}", 1)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise fail(f"prompts file is not UTF-8 text: {path}", 1) from None


def _csv(value: str, cast, name: str) -> list:
    try:
        items = [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{name} expects a comma-separated list, got {value!r}", 2) from None
    if not items:
        raise fail(f"{name} is empty", 2)
    return items


@app.command("eval")
@friendly_errors
def eval_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or the run directory that holds it."),
    policies: str = typer.Option("confidence,critic", help=f"Comma-separated policies to compare, from: {POLICY_NAMES}."),
    steps: str = typer.Option("8,16,32", help="Comma-separated step counts."),
    n: int = typer.Option(256, "--n", min=1, help="Held-out rows to infill (toolcalls records or text windows)."),
    mask: Optional[str] = typer.Option(None, help="Region to infill: answer (toolcalls default), random (each "
                                                  "position with p = --mask-ratio), span (one run; text default)."),
    mask_ratio: float = typer.Option(0.3, min=0.0, max=1.0, help="random/span: share of maskable positions masked."),
    batch_size: int = typer.Option(64, min=1, help="Rows per generation batch (results do not depend on it)."),
    commit: str = typer.Option("remask", help="remask | lock | threshold."),
    schedule: str = typer.Option("linear", help=SCHEDULE_HELP),
    temperature: float = typer.Option(1.0, min=0.0, help="Generator temperature; 0 = greedy."),
    spread: bool = typer.Option(False, "--spread", help="Never commit two adjacent new tokens in one step: the "
                                                        "best of each run of masked neighbours goes first "
                                                        "(remask and lock modes; threshold ignores it)."),
    blocks: int = typer.Option(1, min=1, help="Semi-autoregressive: fill the region in this many left-to-right "
                                              "blocks, each with its share of the steps (1 = the whole region)."),
    seed: int = typer.Option(0, help="Seed: the same for every policy, so they see the same draws."),
    scaffold: bool = typer.Option(False, "--scaffold", help="Fill only the value slots of scaffolded answers and grade "
                                                            "structure, types, fields, [NULL] use and collapse."),
    lock_threshold: float = typer.Option(0.9, min=0.0, max=1.0, help="rcr policy: confidence at which a position locks."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    rows_out: Optional[Path] = typer.Option(None, "--rows", help="Also write every held-out row's outcome under "
                                                                 "every setting to this new JSON Lines file."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document with every row of the table."),
):
    """Compare remasking policies by infilling held-out validation rows.

    Rows are ordered by trunk passes, so policies at equal cost stand together
    (critic at T steps spends as many passes as confidence at 2T). JSON validity and
    field accuracy are reported for toolcalls checkpoints. Different policies at equal
    steps or equal passes are then compared row by row on exact match and, for toolcalls,
    on JSON validity (McNemar's test).
    """
    from rich.progress import Progress

    from cdt import calibration_map
    from cdt import checkpoint as ckpt_mod
    from cdt.paired import equal_cost_pairs
    from cdt.render import eval_table, paired_table
    from cdt.render import scaffold_table
    from cdt.sampling.evaluate import finished_settings, iter_policies, iter_scaffold, outcome_file
    from cdt.sampling.heldout import load_heldout
    from cdt.sampling.loop import SampleConfig

    policy_list, steps_list = _csv(policies, str, "--policies"), _csv(steps, int, "--steps")
    base = SampleConfig(commit=commit, schedule=schedule, temperature=temperature, spread=spread, seed=seed,
                        lock_threshold=lock_threshold, blocks=blocks)
    if min(steps_list) < 1:
        raise fail("--steps must be at least 1", 2)
    for p in policy_list:
        SampleConfig(**{**base.__dict__, "policy": p, "steps": min(steps_list)}).validate()
    if rows_out is not None and scaffold:
        raise fail("--rows is not available with --scaffold", 2)
    ckpt = ckpt_mod.load(checkpoint)
    if scaffold:
        if mask not in (None, "answer"):
            raise fail("--scaffold fills the value slots; it cannot be combined with --mask random/span", 2)
        held = load_heldout(ckpt, n, "answer", seed=seed, scaffold=True)
    else:
        held = load_heldout(ckpt, n, mask, mask_ratio, seed)
    for p in policy_list:  # the step counts vary by setting: the sampler's other settings are compared
        warn(calibration_map.for_policy(ckpt.path.parent, p, calibration_map.sampler_info(base, with_steps=False))[1])
    settings = len(policy_list) * len(steps_list)
    with outcome_file(rows_out, note=warn) as save_rows, \
            Progress(console=err_console, disable=not err_console.is_terminal, transient=True) as progress:
        task = progress.add_task("eval", total=settings * n)
        run_eval = iter_scaffold if scaffold else iter_policies
        rows, interrupted = finished_settings(run_eval(ckpt, held, policy_list, steps_list, batch_size, base, device,
                                                       on_batch=lambda k: progress.advance(task, k)))
        if not rows:
            raise KeyboardInterrupt  # nothing finished: nothing to show or keep
        rows_path = save_rows(rows, complete=not interrupted)  # None without --rows (which --scaffold refuses above)
    cut = f"interrupted after {len(rows)} of {settings} settings" if interrupted else ""
    done = {"interrupted": interrupted, "settings": settings, "finished": len(rows)}
    pairs = [] if scaffold else equal_cost_pairs([(r.policy, r.steps, r.passes, r.hits()) for r in rows])
    json_hits = [] if scaffold else [r.hits("json_valid") for r in rows]
    graded_json = bool(json_hits) and None not in json_hits  # toolcalls answers
    pairs_json = equal_cost_pairs([(r.policy, r.steps, r.passes, h) for r, h in zip(rows, json_hits)]) \
        if graded_json else []
    if scaffold:
        if json_out:
            emit_json({"checkpoint": str(ckpt.path), "n": n, "scaffold": True, "commit": commit, "schedule": schedule,
                       "temperature": temperature, "spread": spread, "blocks": blocks,
                       "rows": [asdict(r) for r in rows]} | done)
        else:
            out_console.print(scaffold_table(rows, n, cut))
    elif json_out:
        emit_json({"checkpoint": str(ckpt.path), "n": n, "mask": held.masking,
                   "mask_ratio": None if held.masking == "answer" else mask_ratio,
                   "answer_tail": ckpt.config.data.answer_tail,  # > 0: regions do not give the answer's length
                   "commit": commit, "schedule": schedule, "temperature": temperature, "spread": spread,
                   "blocks": blocks, "rows": [r.summary() for r in rows], "paired": [asdict(p) for p in pairs],
                   "paired_json_valid": [asdict(p) for p in pairs_json] if graded_json else None,
                   "rows_file": str(rows_path) if rows_path else None} | done)
    else:
        out_console.print(eval_table(rows, n, held.masking, mask_ratio, ckpt.config.data.answer_tail, blocks, cut))
        if pairs:
            out_console.print(paired_table(pairs, n))
        if pairs_json:
            out_console.print(paired_table(pairs_json, n, "JSON valid"))
        if rows_path is not None:
            out_console.print(f"per-row outcomes: {rows_path}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"{cut}; stdout has their figures" + (f", {rows_path} their rows" if rows_path else ""), 1)


@app.command()
@friendly_errors
def calibrate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or the run directory that holds it."),
    n_samples: int = typer.Option(500, "--n-samples", min=1, help="Generations to score (held-out prompts x --samples-per-prompt)."),
    samples_per_prompt: int = typer.Option(1, "--samples-per-prompt", min=1, help="Seeded generations per prompt (for pairwise work)."),
    mode: str = typer.Option("generate", help="generate: full generations; step: one training-style step at random t."),
    policy: str = typer.Option("critic", help=f"Remasking policy of the generations: {POLICY_NAMES}."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps [default: the checkpoint's sample.steps]."),
    temperature: float = typer.Option(1.0, min=0.0, help="Generator temperature; 0 = greedy."),
    spread: bool = typer.Option(False, "--spread", help="generate mode: commit no two adjacent new tokens in one step."),
    schedule: str = typer.Option("linear", help="generate mode: " + SCHEDULE_HELP),
    mask: Optional[str] = typer.Option(None, help="Region to generate: answer (toolcalls default), random, span (text default)."),
    mask_ratio: float = typer.Option(0.3, min=0.0, max=1.0, help="random/span: share of maskable positions masked."),
    buckets: int = typer.Option(20, min=1, help="Reliability buckets."),
    binning: str = typer.Option("uniform", help="uniform: equal-width buckets; quantile: equal token counts."),
    top: int = typer.Option(5, min=1, help="A sample's score = mean of its top-N token critic probabilities."),
    fit: Optional[str] = typer.Option(None, help="Recalibrate: temperature | isotonic (fit on half, ECE on the other half)."),
    score_source: str = typer.Option("critic", help="critic: score = top-N critic mean (higher = more likely wrong); "
                                                    "value-head: score = the value head (higher = more likely right)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Scores file (JSON lines) [default: RUN/calibration_scores.jsonl]."),
    plot: Optional[Path] = typer.Option(None, help="Draw the reliability diagram to this PNG (needs matplotlib)."),
    batch_size: int = typer.Option(32, min=1, help="Generations per batch (results do not depend on it)."),
    seed: int = typer.Option(0, help="Seed of the masks and generations."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON document on stdout."),
):
    """Measure how far the critic can be trusted: one generation per held-out sample.

    Writes into the run directory the per-sample scores (input of `cdt sweep-tau`), the
    report, and a calibration map (critic P(wrong) -> observed error rate) that the
    `critic-calibrated` policy uses; a later run replaces them and names what it replaced.
    Critic probabilities: higher = more likely wrong.
    """
    from dataclasses import asdict

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from cdt import checkpoint as ckpt_mod
    from cdt.calibrate import (REPORT_NAME, SCORES_NAME, CalibrateSettings, calibrate as run_calibrate, earlier_outputs,
                               replaced_note)
    from cdt.checkpoint import atomic_write
    from cdt.plot import reliability_diagram, require_matplotlib
    from cdt.render import calibration_summary, reliability_table
    from cdt.sampling.loop import SampleConfig

    cfg = CalibrateSettings(n_samples=n_samples, samples_per_prompt=samples_per_prompt, mode=mode, policy=policy,
                            steps=steps, temperature=temperature, spread=spread, schedule=schedule, masking=mask,
                            mask_ratio=mask_ratio,
                            buckets=buckets, binning=binning, top=top, fit=fit, batch_size=batch_size, seed=seed,
                            device=device, score_source=score_source)
    cfg.validate()
    SampleConfig(policy=policy, schedule=schedule).validate()
    if plot is not None:
        require_matplotlib()
    ckpt = ckpt_mod.load(checkpoint)
    run_dir = ckpt.path.parent
    scores_path = out or run_dir / SCORES_NAME
    earlier = earlier_outputs(run_dir, scores_path)
    with Progress(TextColumn("[bold]calibrate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, disable=not err_console.is_terminal, transient=True) as progress:
        task = progress.add_task("calibrate", total=n_samples)
        result = run_calibrate(ckpt, cfg, scores_path, run_dir, on_samples=lambda k: progress.advance(task, k))
    report_path = run_dir / REPORT_NAME
    written = [p for p in (result.scores_path, str(report_path), result.map_path) if p]
    result.warnings += [note] if (note := replaced_note(earlier, written)) else []
    for w in result.warnings:
        warn(w)
    doc = asdict(result)
    doc["replaced"] = [p for p in written if p in earlier]
    doc["critic_polarity"] = "probability that the token is wrong (higher = more likely wrong)"
    doc["settings"] = asdict(cfg)
    atomic_write(report_path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8"))
    if plot is not None:
        reliability_diagram(result.tokens, plot, f"critic reliability · {run_dir.name}")
    if json_out:
        emit_json(doc | {"report_path": str(report_path), "plot": str(plot) if plot else None})
        return
    out_console.print(reliability_table(result.tokens, f"critic reliability · {result.tokens.n:,} generated tokens"))
    out_console.print(calibration_summary(result), soft_wrap=True, end="")
    out_console.print(f"{'report':>11}  {report_path}" + (f"\n{'plot':>11}  {plot}" if plot else ""),
                      soft_wrap=True, highlight=False)
    out_console.print(f"\nnext:\n  cdt sweep-tau {result.scores_path} --recall-target 0.9", soft_wrap=True,
                      highlight=False)


@app.command("sweep-tau")
@friendly_errors
def sweep_tau(
    scores: str = typer.Argument(..., help="Scores file (JSON lines, e.g. from cdt calibrate), or - for stdin."),
    score_key: str = typer.Option("score", help="Field holding the score."),
    label_key: str = typer.Option("label", help="Field holding the label (1 = wrong)."),
    direction: str = typer.Option("auto", help="ge: flag score >= τ; le: flag score <= τ; auto: by AUROC (explained)."),
    recall_target: float = typer.Option(0.9, help="Pick the most precise τ whose recall is at least this, in (0, 1]."),
    grid: str = typer.Option("exact", help="exact: every distinct score; quantile: --n-tau quantiles in [--q-lo, --q-hi]; "
                                           "range: --tau-start..--tau-stop by --tau-step."),
    n_tau: int = typer.Option(40, min=1, help="quantile grid: number of thresholds."),
    q_lo: float = typer.Option(0.6, help="quantile grid: lowest quantile."),
    q_hi: float = typer.Option(0.99, help="quantile grid: highest quantile."),
    tau_start: Optional[float] = typer.Option(None, help="range grid: first τ (implies --grid range)."),
    tau_stop: Optional[float] = typer.Option(None, help="range grid: last τ."),
    tau_step: Optional[float] = typer.Option(None, help="range grid: step."),
    examples: int = typer.Option(5, min=0, help="Examples shown per quadrant (flagged/unflagged x wrong/right)."),
    model: Optional[str] = typer.Option(None, help="Model name in the report file name [default: from the scores]."),
    out_dir: Path = typer.Option(Path("calibrated_params"), help="Where the report goes; earlier reports are never overwritten."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as one JSON document on stdout."),
):
    """Choose a flagging threshold τ over stored scores, without touching the model.

    Highest precision subject to recall >= target; ties go to the higher recall. The
    report lands in `{out-dir}/{model}_{timestamp}_n{samples}.json`.
    """
    from cdt.render import examples_table, sweep_summary, sweep_table
    from cdt.scores import read_scores, write_report
    from cdt.thresholds import analyze, candidate_taus

    if not 0.0 < recall_target <= 1.0:
        raise fail(f"--recall-target must be in (0, 1], got {recall_target}", 2)
    if tau_start is not None or tau_stop is not None or tau_step is not None:
        grid = "range"
    data = read_scores(scores, score_key, label_key)
    taus = candidate_taus(data.scores, grid, n_tau, q_lo, q_hi, tau_start, tau_stop, tau_step)
    doc = analyze(data.scores, data.labels, direction=direction, recall_target=recall_target, taus=taus,
                  ids=data.ids, texts=data.texts, examples=examples)
    name = model or data.model or ("stdin" if scores == "-" else Path(scores).stem)
    doc = {"source": data.source, "model": name, "score_key": score_key, "label_key": label_key, "grid": grid,
           "tie_break": "highest precision with recall >= target; then highest recall; then the stricter τ", **doc}
    path = write_report(doc, out_dir, name, doc["n"])
    for w in doc["warnings"]:
        warn(w)
    if json_out:
        emit_json(doc | {"report_path": str(path)})
        return
    out_console.print(sweep_summary(doc), soft_wrap=True, end="")
    out_console.print(sweep_table(doc))
    ex = examples_table(doc)
    if ex is not None:
        out_console.print(ex)
    out_console.print(f"report: {path}", soft_wrap=True, highlight=False)


@app.command()
@friendly_errors
def explore(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or the run directory that holds it."),
    prompt: Optional[str] = typer.Option(None, help="Explore a free prompt instead of held-out rows (no reference)."),
    length: int = typer.Option(96, min=1, help="With --prompt: characters to generate."),
    index: int = typer.Option(0, min=0, help="Held-out row to start from."),
    rows: int = typer.Option(32, min=1, help="Held-out rows to browse (next/previous sample)."),
    masking: Optional[str] = typer.Option(None, help="Region to infill: answer (toolcalls default), random, span."),
    mask_ratio: float = typer.Option(0.3, min=0.0, max=1.0, help="random/span: share of the region masked."),
    mode: str = typer.Option("generate", help="generate: step through denoising; step: the training step's view "
                                              "(one corruption at random t, as calibrate --mode step)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Denoising steps [default: the checkpoint's sample.steps]."),
    policy: str = typer.Option("critic", help=f"Remasking policy (p cycles it interactively): {POLICY_NAMES}."),
    randomness: float = typer.Option(0.0, min=0.0, max=1.0, help="Blend scores with noise: (1-r)*score + r*U."),
    colour: str = typer.Option("critic", "--colour", help="Colour tokens by critic, confidence or correctness."),
    temperature: float = typer.Option(1.0, min=0.0, help="Generator temperature; 0 = greedy."),
    spread: bool = typer.Option(False, "--spread", help="Commit no two adjacent new tokens in one step."),
    schedule: str = typer.Option("linear", help=SCHEDULE_HELP),
    seed: int = typer.Option(0, help="Seed (the same draws as cdt calibrate with this seed)."),
    # two plain flags rather than one --interactive/--no-interactive pair: the pair takes a column of its own in
    # --help, which leaves every help text about 17 characters wide in an 80-column terminal
    interactive: bool = typer.Option(False, "--interactive",
                                     help="Step with keys (the default when stdin and stdout are a terminal)."),
    no_interactive: bool = typer.Option(False, "--no-interactive", help="Print the frames instead of stepping."),
    final_only: bool = typer.Option(False, "--final-only", help="Non-interactive: print only the last frame."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    json_out: bool = typer.Option(False, "--json", help="Per-step statistics as one JSON document."),
):
    """Look the critic in the eye: token heatmaps, step by step through denoising.

    Colours: critic P(wrong) from green (0) to red (1); underlined = wrong against the
    reference; reversed = masked again after this step; dim = protected prompt.
    Keys: n/→ next step, b/← back, j/↓ k/↑ samples, r remask, c colouring, p policy,
    </> randomness, q quit.
    """
    from cdt import checkpoint as ckpt_mod
    from cdt.explore import Explorer, Settings, load_materials
    from cdt.render import frame_view

    if interactive and no_interactive:
        raise fail("give at most one of --interactive and --no-interactive", 2)
    settings = Settings(steps=steps or 1, policy=policy, randomness=randomness, temperature=temperature,
                        spread=spread, schedule=schedule, seed=seed, mode=mode, colouring=colour)
    settings.validate()
    ckpt = ckpt_mod.load(checkpoint)
    settings.steps = steps or ckpt.config.sample.steps
    materials = load_materials(ckpt, prompt, length, rows, masking, mask_ratio, seed, index)
    ex = Explorer(ckpt, materials, settings, device=device, sample=min(index, len(materials) - 1))
    if mode == "step" and prompt is not None:
        raise fail("--mode step needs a held-out row (its reference); drop --prompt", 2)
    terminal = sys.stdin.isatty() and sys.stdout.isatty() and out_console.is_terminal
    if interactive and not terminal:
        warn("no terminal: falling back to --no-interactive")
    if not no_interactive and terminal and not json_out:
        from cdt.terminal import run_interactive

        run_interactive(ex, out_console)
        return
    shown = list(enumerate(ex.frames))[-1:] if final_only else list(enumerate(ex.frames))
    if json_out:
        emit_json({"checkpoint": str(ckpt.path), "settings": asdict(settings), "sample": ex.sample,
                   "label": ex.material.label,
                   "critic_polarity": "probability that the token is wrong (higher = more likely wrong)",
                   "frames": [ex.stats(f) | {"text": ckpt.vocab.decode(f.tokens, mask_char="░")} for _, f in shown]})
        return
    plain = not out_console.is_terminal or out_console.no_color
    for ex.frame, _ in shown:
        out_console.print(frame_view(ex, plain=plain, width=out_console.width), soft_wrap=plain)
        out_console.print()


def _sigterm_as_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def main() -> None:
    from cdt.device import tune_cpu_allocator

    tune_cpu_allocator()
    # SIGTERM (`kill`, a job scheduler) takes Ctrl-C's path: every command keeps what it finished and exits with a
    # one-line error (training installs its own handler for both and saves a checkpoint)
    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    app(prog_name="cdt")


if __name__ == "__main__":
    main()
