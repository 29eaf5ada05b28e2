"""The `cdt` command line: flags -> config dataclasses -> library call -> rich or --json.

Results go to stdout, diagnostics and progress to stderr. Exit codes: 0 success,
1 runtime failure (one-line cause on stderr), 2 usage error.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from cdt.errors import CdtError

EXAMPLE_PROMPT = "Set an alarm for 7:30 pm called gym"
EXAMPLE_ANSWER = '{"name": "set_alarm", "arguments": {"time": "19:30", "label": "gym"}}'

app = typer.Typer(
    help="Masked diffusion language models with a learned token critic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out_console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Masked diffusion language models with a learned token critic.

    Critic polarity everywhere: a higher critic probability means the token is more likely wrong.
    """


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
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


def emit_json(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


@app.command()
@friendly_errors
def train(
    preset: Optional[str] = typer.Option(None, help="Preset: tiny (tests, seconds), small (default, ~10 min on 2 CPU cores), base (GPU)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with model/data/train sections; overrides the preset."),
    data: Optional[str] = typer.Option(None, help="'toolcalls' (embedded corpus) or the path of a UTF-8 text file."),
    out: Optional[Path] = typer.Option(None, help="Run directory for checkpoint, config.yaml and metrics.jsonl [default: runs/PRESET-TIMESTAMP]."),
    max_iters: Optional[int] = typer.Option(None, min=1, help="Optimizer steps in total (a resumed run counts the earlier ones)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Rows per step."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Peak learning rate."),
    seed: Optional[int] = typer.Option(None, help="Training seed: batches, masks, critic fills."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda (bf16 autocast on CUDA, fp32 on CPU)."),
    eval_interval: Optional[int] = typer.Option(None, min=1, help="Steps between validation passes and checkpoints."),
    set_: List[str] = typer.Option([], "--set", help="Any config value, SECTION.KEY=VALUE (e.g. model.critic=mlp); repeatable."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout and nothing else there."),
):
    """Train the generator and the critic on one shared trunk.

    With no arguments: the small preset on the embedded toolcalls corpus. Ctrl-C or
    SIGTERM saves a checkpoint first; --resume continues it bit for bit.
    """
    from cdt.config import parse_override, resolve
    from cdt.render import TrainProgress, train_summary
    from cdt.train import train as run_train

    flags = {"data": {"source": data}, "model": {},
             "train": {"max_iters": max_iters, "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
                       "eval_interval": eval_interval}}
    overrides = [{s: {k: v for k, v in kv.items() if v is not None} for s, kv in flags.items()}]
    overrides += [parse_override(item) for item in set_]
    cfg = resolve(preset, config, overrides)
    if resume and out is None:
        raise fail("--resume needs --out DIR, the run directory to continue", 2)
    if out is None:
        out = Path("runs") / f"{preset or 'small'}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_train(cfg, out, resume=resume, reporter=None if json_out else TrainProgress(err_console))
    next_commands = [
        f"cdt eval --checkpoint {out} --n 128   # compare remasking policies on held-out answers",
        f"cdt sample --checkpoint {out} --prompt {EXAMPLE_PROMPT!r} --length {len(EXAMPLE_ANSWER)} --policy critic",
        f"cdt train --out {out} --resume --max-iters {result.max_iters * 2}   # keep training",
    ] if cfg.data.source == "toolcalls" else [
        f"cdt sample --checkpoint {out} --length 64",
        f"cdt train --out {out} --resume --max-iters {result.max_iters * 2}   # keep training",
    ]
    if json_out:
        doc = asdict(result)
        doc.update(run_dir=str(out), checkpoint=str(result.checkpoint), config=cfg.to_dict())
        emit_json(doc)
    else:
        out_console.print(train_summary(result, next_commands), soft_wrap=True, end="")
    if result.interrupted:
        raise fail(f"stopped by {result.interrupted} at step {result.step}; checkpoint saved; "
                   f"resume with: cdt train --out {out} --resume", 1)


@app.command()
@friendly_errors
def sample(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint file, or the run directory that holds it."),
    prompt: str = typer.Option("", help="Protected text; for toolcalls models, the request."),
    length: int = typer.Option(96, min=1, help="Characters to generate after the prompt."),
    n: int = typer.Option(1, "--n", min=1, help="Rows generated in one batch (each with its own seeded draws)."),
    steps: int = typer.Option(16, min=1, help="Denoising steps."),
    policy: str = typer.Option("confidence", help="Remasking policy: random, confidence, margin, entropy, critic."),
    commit: str = typer.Option("remask", help="remask (committed tokens may be remasked), lock (final once "
                                               "committed), threshold (commit all above --threshold)."),
    threshold: float = typer.Option(0.9, min=0.0, max=1.0, help="threshold mode: confidence (1 - score) needed to commit."),
    schedule: str = typer.Option("cosine", help="How many positions stay masked after each step: linear | cosine."),
    temperature: float = typer.Option(1.0, min=0.0, help="Generator temperature; 0 = greedy."),
    top_k: int = typer.Option(0, min=0, help="Sample among the k most likely characters; 0 = off."),
    top_p: float = typer.Option(1.0, min=0.0, max=1.0, help="Nucleus sampling mass; 1 = off."),
    randomness: float = typer.Option(0.0, min=0.0, max=1.0, help="Blend scores with noise: (1-r)*score + r*U."),
    selection: str = typer.Option("topk", help="topk: remask the worst; gumbel: sample them, p ~ score."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same output."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    show_steps: bool = typer.Option(False, "--show-steps", help="Print the denoising trajectory (stderr)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document: text, per-token critic P(wrong), passes."),
):
    """Generate by iterative unmasking, one line of text per row on stdout.

    Critic probabilities in --json are P(token is wrong): higher = more likely wrong.
    """
    from cdt import checkpoint as ckpt_mod
    from cdt.render import trajectory
    from cdt.sampling.loop import SampleConfig
    from cdt.sampling.run import sample as run_sample

    cfg = SampleConfig(steps=steps, policy=policy, commit=commit, threshold=threshold, schedule=schedule,
                       temperature=temperature, top_k=top_k, top_p=top_p, randomness=randomness,
                       selection=selection, seed=seed)
    cfg.validate()
    ckpt = ckpt_mod.load(checkpoint)
    result = run_sample(ckpt, prompt, length, n, cfg, device=device, record=show_steps)
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
        for text in result.texts:
            sys.stdout.write(text + "\n")


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
    policies: str = typer.Option("confidence,critic", help="Comma-separated policies to compare."),
    steps: str = typer.Option("8,16,32", help="Comma-separated step counts."),
    n: int = typer.Option(256, "--n", min=1, help="Held-out records (their answers are masked and infilled)."),
    batch_size: int = typer.Option(64, min=1, help="Rows per generation batch (results do not depend on it)."),
    commit: str = typer.Option("remask", help="remask | lock | threshold."),
    temperature: float = typer.Option(1.0, min=0.0, help="Generator temperature; 0 = greedy."),
    seed: int = typer.Option(0, help="Seed: the same for every policy, so they see the same draws."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    json_out: bool = typer.Option(False, "--json", help="One JSON document with every row of the table."),
):
    """Compare remasking policies on held-out toolcalls answers.

    Rows are ordered by trunk passes, so policies at equal cost stand together
    (critic at T steps spends as many passes as confidence at 2T).
    """
    from rich.progress import Progress

    from cdt import checkpoint as ckpt_mod
    from cdt.render import eval_table
    from cdt.sampling.evaluate import evaluate_policies
    from cdt.sampling.loop import SampleConfig

    policy_list, steps_list = _csv(policies, str, "--policies"), _csv(steps, int, "--steps")
    base = SampleConfig(commit=commit, temperature=temperature, seed=seed)
    for p in policy_list:
        SampleConfig(**{**base.__dict__, "policy": p}).validate()
    if min(steps_list) < 1:
        raise fail("--steps must be at least 1", 2)
    ckpt = ckpt_mod.load(checkpoint)
    with Progress(console=err_console, disable=not err_console.is_terminal, transient=True) as progress:
        task = progress.add_task("eval", total=len(policy_list) * len(steps_list) * n)
        rows = evaluate_policies(ckpt, policy_list, steps_list, n, batch_size, base, device,
                                 on_batch=lambda k: progress.advance(task, k))
    if json_out:
        emit_json({"checkpoint": str(ckpt.path), "n": n, "commit": commit, "temperature": temperature,
                   "rows": [asdict(r) for r in rows]})
    else:
        out_console.print(eval_table(rows, n))


def main() -> None:
    app(prog_name="cdt")


if __name__ == "__main__":
    main()
