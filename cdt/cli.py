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
    next_commands = [f"cdt train --out {out} --resume --max-iters {result.max_iters * 2}   # keep training"]
    if json_out:
        doc = asdict(result)
        doc.update(run_dir=str(out), checkpoint=str(result.checkpoint), config=cfg.to_dict())
        emit_json(doc)
    else:
        out_console.print(train_summary(result, next_commands), soft_wrap=True, end="")
    if result.interrupted:
        raise fail(f"stopped by {result.interrupted} at step {result.step}; checkpoint saved; "
                   f"resume with: cdt train --out {out} --resume", 1)


def main() -> None:
    app(prog_name="cdt")


if __name__ == "__main__":
    main()
