"""Rich renderables and the training progress display. Diagnostics go to stderr, results to stdout."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from cdt.train import Reporter


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt=".3f") -> str:
    return "-" if x is None else format(x, fmt)


def eval_line(r: dict) -> str:
    return (f"step {r['step']}: val bpc {_num(r['val_bpc'])} · answer acc {_pct(r['answer_acc'])}"
            + (f" · value acc {_pct(r['value_acc'])}" if r.get("value_acc") is not None else "")
            + (f" · critic AUROC {_num(r.get('critic_auroc'))} (masked only {_num(r.get('critic_auroc_masked'))})"
               if "critic_auroc" in r else ""))


class TrainProgress(Reporter):
    """A progress bar with live loss and throughput on a terminal; silent otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self.enabled = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, disable=not self.enabled,
        )
        self.task = None

    def on_start(self, info: dict) -> None:
        if not self.enabled:
            return
        d = info["data"]
        split = f"{d['train']} train / {d['val']} validation records, overlap {d['overlap']}" if "train" in d else \
            f"{d['train_chars']} train / {d['val_chars']} validation characters"
        self.console.print(f"[dim]run {info['run_dir']} · {info['device']} · {info['params'] / 1e6:.2f}M parameters · "
                           f"{split} · masking: {info['region']}[/dim]", highlight=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=info["max_iters"], completed=info["start"], status="")

    def on_log(self, r: dict) -> None:
        if self.task is None:
            return
        status = f"loss {r['loss']:.3f} · lr {r['lr']:.1e} · {r['tokens_per_s']:,.0f} tok/s"
        self.progress.update(self.task, completed=r["step"], status=status)

    def on_eval(self, r: dict) -> None:
        if self.task is not None:
            self.progress.console.print(eval_line(r), highlight=False)

    def on_end(self, result) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=result.step)
            self.progress.stop()


def train_summary(result, next_commands: list[str]) -> Text:
    """The final summary of `cdt train` (stdout): plain lines, so paths and commands copy whole."""
    state = f"stopped by {result.interrupted}" if result.interrupted else "finished"
    rows = [("checkpoint", str(result.checkpoint)),
            ("steps", f"{result.step} / {result.max_iters} ({state})"
             + (f", resumed from {result.resumed_from}" if result.resumed_from else "")),
            ("time", f"{result.elapsed_s:.0f} s · {result.tokens_per_s:,.0f} tokens/s")]
    e = result.final_eval
    if e:
        rows.append(("generator", f"validation bits/char {_num(e['val_bpc'])} · "
                                  f"answer-character accuracy {_pct(e['answer_acc'])} (t ~ U(0,1))"
                                  + (f" · values restored {_pct(e['value_acc'])} (one masked at a time)"
                                     if e.get("value_acc") is not None else "")))
        if "critic_auroc" in e:
            rows.append(("critic", f"AUROC {_num(e['critic_auroc'])} on answer positions, "
                                   f"{_num(e['critic_auroc_masked'])} on filled positions only · "
                                   f"mean P(wrong) {_num(e['critic_p_wrong'])} on wrong tokens vs "
                                   f"{_num(e['critic_p_right'])} on right ones"))
    text = Text()
    for key, value in rows:
        text.append(f"{key:>10}  ", style="bold").append(value + "\n")
    if next_commands:
        text.append("\nnext:\n", style="bold")
        for c in next_commands:
            text.append(f"  {c}\n")
    return text


def trajectory(result, vocab, plain: bool) -> Text:
    """The denoising steps of each row: masks as '_', positions remasked after the step highlighted."""
    start, end = result.region
    text = Text()
    for i in range(len(result.texts)):
        text.append(f"row {i}\n", style="bold")
        for rec in result.generation.steps:
            text.append(f"  step {rec.step:>3}  ")
            for pos in range(start, end):
                ch = vocab.decode([int(rec.filled[i, pos])]) or " "
                remasked = bool(rec.remasked[i, pos])
                if plain:
                    text.append("_" if remasked else ch)
                else:
                    text.append(ch, style="reverse red" if remasked else "")
            text.append("\n")
    return text


def eval_table(rows, n: int) -> Table:
    """Policies x steps, ordered by trunk passes so equal-cost rows stand together."""
    table = Table(title=f"cdt eval · {n} held-out answers infilled", title_justify="left")
    width = max(len(r.policy) for r in rows)
    for col in ("passes", "policy", "steps", "char acc", "exact", "JSON ok", "fields", "s"):
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True,
                         min_width=width if col == "policy" else None)
    best = max(r.exact for r in rows)
    for r in sorted(rows, key=lambda r: (r.passes, r.policy)):
        table.add_row(f"{r.passes:.0f}", r.policy, str(r.steps), _pct(r.char_acc),
                      f"[bold]{_pct(r.exact)}[/bold]" if r.exact == best else _pct(r.exact),
                      _pct(r.json_valid), _pct(r.field_acc), f"{r.seconds:.1f}")
    return table
