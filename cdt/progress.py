"""Progress of long work on stderr: a live bar on a terminal; plain lines in a log file or a pipe
(`cdt train 2>&1 | tee log`, nohup, a job scheduler), at most one every PLAIN_EVERY_S seconds and
never an ANSI code, so a headless run still shows that it is alive and how far it got."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from cdt.render import eval_line
from cdt.rundir import Reporter

PLAIN_EVERY_S = 30.0  # the longest a headless run stays silent between progress lines (when it reports that often)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class PlainProgress:
    """Progress as plain lines: `label 120/500 (24%) · status · 1:02 elapsed, ~3:16 left`, one when
    PLAIN_EVERY_S seconds have passed since the start or the last line, and one when the work is done."""

    def __init__(self, console: Console, label: str, total: int, completed: int = 0):
        self.console, self.label, self.total = console, label, total
        self.completed, self.first = completed, completed
        self.t0 = self.last = time.monotonic()
        self.finished = False

    def update(self, completed: int, status: str = "") -> None:
        self.completed = completed
        now = time.monotonic()
        done = completed >= self.total
        if self.finished or not (done or now - self.last >= PLAIN_EVERY_S):
            return
        self.finished, self.last = done, now
        elapsed = now - self.t0
        rate = (completed - self.first) / elapsed if elapsed > 0 else 0.0
        left = f", ~{_duration((self.total - completed) / rate)} left" if rate > 0 and not done else ""
        share = f" ({100 * completed / self.total:.0f}%)" if self.total else ""
        self.console.print(f"{self.label} {completed:,}/{self.total:,}{share}" + (f" · {status}" if status else "")
                           + f" · {_duration(elapsed)} elapsed{left}", highlight=False, soft_wrap=True, markup=False)


class ProgressBar:
    """A bar for long work on a terminal, plain lines elsewhere (nothing with enabled=False); lines printed
    through it appear above the bar."""

    def __init__(self, console: Console, label: str, total: int, status: bool = False, enabled: bool = True):
        columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn()]
        columns += [TextColumn("{task.fields[status]}")] if status else [TimeRemainingColumn()]
        self.progress = Progress(*columns, console=console, transient=not status,
                                 disable=not (enabled and console.is_terminal))
        self.task = self.progress.add_task(label, total=total, status="")
        self.plain = PlainProgress(console, label, total) if enabled and not console.is_terminal else None

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def advance(self, k: int = 1) -> None:
        self.progress.advance(self.task, k)
        if self.plain:
            self.plain.update(self.plain.completed + k)

    def update(self, completed: int, status: str = "") -> None:
        self.progress.update(self.task, completed=completed, status=status)
        if self.plain:
            self.plain.update(completed, status)

    def print(self, renderable) -> None:
        self.progress.console.print(renderable, highlight=False, soft_wrap=True)


class TrainProgress(Reporter):
    """A progress bar with live loss and throughput on a terminal; elsewhere the same as plain lines:
    the run's description, every validation, and a progress line at most every PLAIN_EVERY_S seconds."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False, disable=not self.live,
        )
        self.task = None
        self.plain: PlainProgress | None = None
        self.region = "answer"

    def on_start(self, info: dict) -> None:
        self.region = info["region"]
        d = info["data"]
        split = f"{d['train']} train / {d['val']} validation records, overlap {d['overlap']}" if "train" in d else \
            f"{d['train_chars']} train / {d['val_chars']} validation characters"
        scale = (f" · {info['world_size']} processes x batch {info['global_batch'] // info['world_size'] // info['grad_accum']}"
                 f" x {info['grad_accum']} accumulation = global batch {info['global_batch']}"
                 if info.get("world_size", 1) > 1 or info.get("grad_accum", 1) > 1 else "")
        self.console.print(f"[dim]run {info['run_dir']} · {info['device']} · {info['params'] / 1e6:.2f}M parameters · "
                           f"{split} · masking: {info['region']}{scale}[/dim]", highlight=False, soft_wrap=True)
        if not self.live:
            self.plain = PlainProgress(self.console, "train", info["max_iters"], info["start"])
            return
        self.progress.start()
        self.task = self.progress.add_task("train", total=info["max_iters"], completed=info["start"], status="")

    def on_log(self, r: dict) -> None:
        status = f"loss {r['loss']:.3f} · lr {r['lr']:.1e} · {r['tokens_per_s']:,.0f} tok/s"
        if self.plain:
            self.plain.update(r["step"], status)
        elif self.task is not None:
            self.progress.update(self.task, completed=r["step"], status=status)

    def on_eval(self, r: dict) -> None:
        if self.task is not None or self.plain:
            self.progress.console.print(eval_line(r, self.region), highlight=False, soft_wrap=True)

    def on_message(self, text: str) -> None:
        self.console.print(Text("warning: " + text, style="yellow"))

    def on_end(self, result) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=result.step)
            self.progress.stop()
