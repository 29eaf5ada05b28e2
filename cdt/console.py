"""The command line's contract with a shell: results on stdout (rich, or exactly one JSON document with
--json), diagnostics on stderr, and an exit code: 0 success, 1 runtime failure with a one-line cause,
2 usage error. Expected failures (CdtError, Ctrl-C) never show a traceback."""

from __future__ import annotations

import functools
import json
import sys

import typer
from rich.console import Console
from rich.markup import escape

from cdt.errors import CdtError

out_console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int) -> typer.Exit:
    """Print `error: message` on stderr; raise what this returns to exit with `code`."""
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
    """The one JSON document a --json run prints on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def write_lines(docs) -> None:
    """JSON lines on stdout, flushed: a pipe sees each as soon as it is written."""
    sys.stdout.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    sys.stdout.flush()
