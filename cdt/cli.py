"""The `cdt` command line: flags -> a config -> one library call -> rich on a terminal, or --json.

Results go to stdout, diagnostics and progress to stderr. Exit codes: 0 success, 1 runtime
failure (one-line cause on stderr), 2 usage error. A command only parses, calls and renders:
its flags are the fields of its settings dataclass (cdt/settings.py, made flags by cdt/options.py),
validated before any model loads, and handed to one library call.
"""

import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from cdt import options as opts
from cdt.console import OneLineUsage, emit_json, err_console, fail, friendly_errors, out_console, warn, write_lines
from cdt.errors import UsageError
from cdt.settings import (BenchSettings, CalibrateSettings, EvalSettings, ExploreSettings, SampleConfig, SweepSettings,
                          TrainSettings)

app = typer.Typer(cls=OneLineUsage, help="Masked diffusion language models with a learned token critic.",
                  no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown")


def _print_version(given: bool) -> None:
    if given:
        from cdt import __version__

        out_console.print(f"cdt {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print cdt's version and exit.")) -> None:
    """Masked diffusion language models with a learned token critic.

    Critic polarity everywhere: a higher critic probability means the token is more likely wrong.
    """


@app.command()
@friendly_errors
@opts.settings(TrainSettings, "settings")
def train(
    settings: TrainSettings = None,
    set_: List[str] = typer.Option([], "--set", help="Any config value, SECTION.KEY=VALUE (e.g. model.critic=mlp); "
                                   "repeatable."),
    json_out: opts.Json = False,
):
    """Train the generator and the critic on one shared trunk.

    With no arguments: the small preset on the embedded toolcalls corpus. Ctrl-C or
    SIGTERM saves a checkpoint first; --resume continues it bit for bit.
    """
    from cdt import checkpoint
    from cdt.config import resolve_flags
    from cdt.rundir import new_run_dir

    s = settings
    # a resumed run keeps the settings it was trained with; flags given with --resume change them
    base = checkpoint.load(s.out).config if s.resume else None
    cfg = resolve_flags(s.preset, s.config, s.overrides(), set_, base=base)
    if s.stage == "value":
        return _train_value_stage(cfg, s.out or new_run_dir("value"), json_out)
    _train_generator(cfg, s.out or new_run_dir(s.preset or "small"), s.resume, json_out)


def _train_generator(cfg, out: Path, resume: bool, json_out: bool) -> None:
    from dataclasses import asdict

    from cdt.distributed import dist_info
    from cdt.progress import TrainProgress
    from cdt.render import train_summary
    from cdt.train import train as run_train

    main_rank = dist_info().is_main  # under torchrun only rank 0 reports
    reporter = TrainProgress(err_console) if main_rank and not json_out else None
    result = run_train(cfg, out, resume=resume, reporter=reporter)
    if not main_rank:
        return
    if json_out:
        emit_json(asdict(result) | {"run_dir": str(out), "checkpoint": str(result.checkpoint), "config": cfg.to_dict()})
    else:
        out_console.print(train_summary(result, ema=cfg.train.ema), soft_wrap=True, end="")
    if result.interrupted:
        raise fail(f"stopped by {result.interrupted} at step {result.step}; checkpoint saved; "
                   f"resume with: cdt train --out {out} --resume", 1)


def _train_value_stage(cfg, out: Path, json_out: bool) -> None:
    from dataclasses import asdict

    from cdt.progress import ProgressBar
    from cdt.render import stage_line, stage_summary
    from cdt.value_stage import train_value_stage

    with ProgressBar(err_console, "value stage", cfg.value_stage.max_iters, status=True, enabled=not json_out) as bar:
        result = train_value_stage(cfg, out, on_step=lambda step, loss: bar.update(step, f"loss {loss:.4f}"),
                                   on_eval=None if json_out else lambda r: bar.print(stage_line(r)))
    if json_out:
        emit_json(asdict(result) | {"run_dir": str(out)})
    else:
        out_console.print(stage_summary(result, out), soft_wrap=True, end="")
    if result.interrupted:
        raise fail(f"stopped by {result.interrupted} at step {result.steps} of {result.max_iters}; the value head as "
                   f"it was then is saved in {result.checkpoint}", 1)


@app.command()
@friendly_errors
@opts.settings(SampleConfig, "sampler")
def sample(
    checkpoint: opts.Checkpoint,
    prompt: str = typer.Option("", help="Protected text; for toolcalls models, the request."),
    length: int = typer.Option(96, min=1, help="Characters to generate after the prompt (a model trained with "
                               "data.answer_tail takes it as a budget and ends with [NULL])."),
    n: int = typer.Option(1, "--n", min=1, help="Rows generated in one batch (each with its own seeded draws)."),
    sampler: SampleConfig = None,
    schema: Optional[str] = typer.Option(None, help="Fill the value slots of a built-in toolcalls tool's scaffold "
                                         "(e.g. get_weather); Python writes the JSON structure."),
    schema_file: Optional[Path] = typer.Option(None, help="Like --schema, from a file: a JSON Schema object, an "
                                               "OpenAI-style tool, or a JSON list of tools (BFCL's form too)."),
    budget: List[str] = typer.Option([], help="Slot size, FIELD=N or N for every field (scaffolds; repeatable)."),
    prompts_file: Optional[str] = typer.Option(None, help="One request per line ('-' = stdin), each generated as "
                                               "--prompt would be; prints one JSON line per row (per request with "
                                               "--schema)."),
    device: opts.Device = "auto",
    show_steps: bool = typer.Option(False, "--show-steps", help="Print the denoising trajectory (stderr)."),
    json_out: opts.Json = False,
):
    """Generate by iterative unmasking, one line of text per row on stdout.

    A newline the model generates inside a row is written as `\\n` (a backslash as `\\\\`);
    --json gives the raw text and each character's critic P(wrong): higher = more likely wrong.
    """
    from cdt import scaffold
    from cdt.progress import ProgressBar
    from cdt.render import one_line, slot_trajectory, trajectory
    from cdt.sampling.run import read_requests, sample_each
    from cdt.scaffold.sample import sample_schema

    if prompt and prompts_file:
        raise UsageError("give --prompt or --prompts-file, not both")
    prompts = read_requests(prompts_file) if prompts_file else [prompt]
    plain = not err_console.is_terminal
    if schema or schema_file:
        notes: list[str] = []
        tools = scaffold.load(schema, schema_file, budget, notes)
        for note in notes:  # schema constraints a slot cannot express: said once, before the run
            warn(note)
        result = sample_schema(checkpoint, tools, prompts, sampler, device, record=show_steps)
        for w in result.warnings + [f"row {i}: {e}" for i, s in enumerate(result.samples) for e in s.errors]:
            warn(w)
        if prompts_file:
            write_lines(s.to_json() for s in result.samples)
        elif json_out:
            emit_json(result.to_json())
        else:
            sys.stdout.writelines(s.text + "\n" for s in result.samples)
        if show_steps:
            starts = [s.start for s in result.samples]
            err_console.print(slot_trajectory(result.generation, starts, result.vocab, plain), soft_wrap=True,
                              highlight=False)
        return
    with ProgressBar(err_console, "sample", len(prompts), enabled=bool(prompts_file)) as bar:
        for i, result in enumerate(sample_each(checkpoint, prompts, length, n, sampler, device, record=show_steps)):
            for w in result.warnings if i == 0 else ():  # the same for every request
                warn(w)
            if show_steps:
                bar.print(trajectory(result, result.vocab, plain))
            if prompts_file:  # written as each request finishes
                write_lines(result.lines(json_out))
            elif json_out:
                emit_json(result.to_json())
            else:
                sys.stdout.writelines(one_line(text) + "\n" for text in result.texts)
            bar.advance()


@app.command("eval")
@friendly_errors
@opts.settings(EvalSettings, "settings")
def eval_cmd(
    checkpoint: opts.Checkpoint,
    settings: EvalSettings = None,
    rows_out: Optional[Path] = typer.Option(None, "--rows", help="Also write every held-out row's outcome under "
                                            "every setting to this new JSON Lines file."),
    overwrite: opts.Overwrite = False,
    json_out: opts.Json = False,
):
    """Compare remasking policies by infilling held-out validation rows.

    Rows are ordered by trunk passes, so policies at equal cost stand together
    (critic at T steps spends as many passes as confidence at 2T). JSON validity and
    field accuracy are reported for toolcalls checkpoints. Different policies at equal
    steps or equal passes are then compared row by row on exact match and, for toolcalls,
    on JSON validity (McNemar's test).
    """
    from cdt.progress import ProgressBar
    from cdt.render import show_eval
    from cdt.sampling.evaluate import evaluate

    with ProgressBar(err_console, "eval", settings.n * len(settings.policies) * len(settings.steps)) as bar:
        report = evaluate(checkpoint, settings, rows_out, on_batch=bar.advance, overwrite=overwrite)
    for w in report.warnings:
        warn(w)
    emit_json(report.to_json()) if json_out else show_eval(out_console, report)
    if report.interrupted:
        raise fail(f"{report.cut}; stdout has their figures"
                   + (f", {report.rows_file} their rows" if report.rows_file else ""), 1)


@app.command()
@friendly_errors
@opts.settings(CalibrateSettings, "settings")
def calibrate(
    checkpoint: opts.Checkpoint,
    settings: CalibrateSettings = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Scores file (JSON lines) [default: "
                                       "RUN/calibration_scores.jsonl]."),
    plot: Optional[Path] = typer.Option(None, help="Draw the reliability diagram to this .png, .pdf or .svg (needs "
                                        "matplotlib)."),
    overwrite: opts.Overwrite = False,
    json_out: opts.Json = False,
):
    """Measure how far the critic can be trusted: one generation per held-out sample.

    Writes into the run directory the per-sample scores (input of `cdt sweep-tau`), the
    report, and a calibration map (critic P(wrong) -> observed error rate) that the
    `critic-calibrated` policy uses; a later run replaces them and names what it replaced.
    Critic probabilities: higher = more likely wrong.
    """
    from cdt.calibrate import run
    from cdt.progress import ProgressBar
    from cdt.render import show_calibration

    with ProgressBar(err_console, "calibrate", settings.n_samples) as bar:
        result = run(checkpoint, settings, out, plot, on_samples=bar.advance, overwrite=overwrite)
    for w in result.warnings:
        warn(w)
    emit_json(result.to_json()) if json_out else show_calibration(out_console, result)


@app.command("sweep-tau")
@friendly_errors
@opts.settings(SweepSettings, "settings")
def sweep_tau(
    scores: str = typer.Argument(..., help="Scores file (JSON lines, e.g. from cdt calibrate), or - for stdin."),
    settings: SweepSettings = None,
    json_out: opts.Json = False,
):
    """Choose a flagging threshold τ over stored scores, without touching the model.

    τ is the most precise of those certified to keep recall >= target on new samples with probability
    >= --confidence (0: chosen on these samples alone). The report: `{out-dir}/{model}_{timestamp}_n{N}.json`.
    """
    from cdt.progress import ProgressBar
    from cdt.render import show_sweep
    from cdt.thresholds import sweep_tau as sweep

    with ProgressBar(err_console, "bootstrap", settings.bootstrap, enabled=err_console.is_terminal) as bar:
        report = sweep(scores, settings, on_resample=bar.advance)
    for w in report.doc["warnings"]:
        warn(w)
    emit_json(report.to_json()) if json_out else show_sweep(out_console, report)
    if settings.strict and report.unmet:
        raise typer.Exit(1)


@app.command()
@friendly_errors
@opts.settings(ExploreSettings, "settings")
def explore(
    checkpoint: opts.Checkpoint,
    settings: ExploreSettings = None,
    rows: Optional[int] = typer.Option(None, "--rows", hidden=True),  # the old name of --n
    masking: Optional[str] = typer.Option(None, "--masking", hidden=True),  # the old name of --mask
    # two plain flags rather than one --interactive/--no-interactive pair: the pair takes a column of its own in
    # --help, which leaves every help text about 17 characters wide in an 80-column terminal
    interactive: bool = typer.Option(False, "--interactive", help="Step with keys (the default when stdin and "
                                     "stdout are a terminal)."),
    no_interactive: bool = typer.Option(False, "--no-interactive", help="Print the frames instead of stepping."),
    final_only: bool = typer.Option(False, "--final-only", help="Non-interactive: print only the last frame."),
    json_out: opts.Json = False,
):
    """Look the critic in the eye: token heatmaps, step by step through denoising.

    Colours: critic P(wrong) from green (0) to red (1); underlined = wrong against the
    reference; reversed = masked again after this step; dim = protected prompt.
    Keys: n/→ next step, b/← back, j/↓ k/↑ samples, r remask, c colouring, p policy,
    </> randomness, q quit.
    """
    from cdt.explore import open_explorer
    from cdt.render import frame_view

    if interactive and no_interactive:
        raise UsageError("give at most one of --interactive and --no-interactive")
    settings.n = opts.renamed("--rows", rows, "--n", settings.n, ExploreSettings.n)
    settings.mask = opts.renamed("--masking", masking, "--mask", settings.mask, ExploreSettings.mask)
    ex = open_explorer(checkpoint, settings)
    terminal = sys.stdin.isatty() and sys.stdout.isatty() and out_console.is_terminal
    if interactive and not terminal:
        warn("no terminal: falling back to --no-interactive")
    if not no_interactive and terminal and not json_out:
        from cdt.terminal import run_interactive

        return run_interactive(ex, out_console)
    if json_out:
        return emit_json(ex.to_json(final_only))
    plain = not out_console.is_terminal or out_console.no_color
    for ex.frame in range(len(ex.frames))[-1:] if final_only else range(len(ex.frames)):
        out_console.print(frame_view(ex, plain=plain, width=out_console.width), soft_wrap=plain)
        out_console.print()


@app.command()
@friendly_errors
@opts.settings(BenchSettings, "settings")
def bench(
    benchmark: str = typer.Argument(..., help="The benchmark: bfcl (the Berkeley Function Calling Leaderboard)."),
    checkpoint: opts.Checkpoint = ...,
    settings: BenchSettings = None,
    rows_out: Optional[Path] = typer.Option(None, "--rows", help="Also write each call's outcome and critic score "
                                            "(JSON lines: score, label; cdt sweep-tau reads it)."),
    overwrite: opts.Overwrite = False,
    json_out: opts.Json = False,
):
    """Score calls to functions the model never saw, on a field benchmark.

    Each BFCL request gets one typed-scaffold call of the functions it offers, scored by BFCL's AST
    rules (cdt's implementation). Data: `pip install --no-deps bfcl-eval` (data only), or --data.
    """
    from cdt.bfcl.run import bench as run_bench, requests
    from cdt.progress import ProgressBar
    from cdt.render import show_bench

    chosen = requests(settings, benchmark)
    with ProgressBar(err_console, "bench", sum(map(len, chosen.values()))) as bar:
        report = run_bench(checkpoint, settings, rows_out, overwrite, on_batch=bar.advance, chosen=chosen)
    for w in report.warnings:
        warn(w)
    emit_json(report.to_json()) if json_out else show_bench(out_console, report)
    if report.interrupted:
        raise fail(report.cut, 1)


@app.command()
@friendly_errors
def export(
    out: Path = typer.Argument(..., help="A new (or empty) directory to write."),
    checkpoint: opts.Checkpoint = ...,
    fmt: str = typer.Option("hf", "--format", help="hf: safetensors weights, config.json and the tokenizer, "
                            "loadable with transformers."),
    json_out: opts.Json = False,
):
    """Write a checkpoint in a format other tools load, so a model trained with cdt can leave cdt.

    A run on a Hugging Face backbone exports as that model (its critic head beside it); a run on cdt's
    own trunk loads with trust_remote_code=True where cdt is installed. Needs cdt[hf].
    """
    from dataclasses import asdict

    from cdt.export import export as run_export
    from cdt.render import show_export

    result = run_export(checkpoint, out, fmt)
    emit_json(asdict(result)) if json_out else show_export(out_console, result)


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
