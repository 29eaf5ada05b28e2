"""The command line's contract with a shell: results on stdout (rich, or exactly one JSON document with
--json), diagnostics on stderr, and an exit code: 0 success, 1 runtime failure with a one-line cause,
2 usage error. Expected failures (CdtError, Ctrl-C, an OS refusing a file) never show a traceback; an
unexpected one shows one line and the path of the saved traceback (CDT_DEBUG=1 raises it instead)."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from cdt.errors import CdtError

# typer ships its own click, whose exceptions share this base; found by name, not by a private module path
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

out_console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int) -> typer.Exit:
    """Print `error: message` on stderr, always one line (a newline in it is shown as \\n); raise what this
    returns to exit with `code`."""
    one_line = message.replace("\r", "\\r").replace("\n", "\\n")
    err_console.print(f"[bold red]error:[/bold red] {escape(one_line)}", highlight=False, soft_wrap=True)
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
        except typer.Exit:  # fail()'s exit, and --version's
            raise
        except OSError as e:  # a file the OS refused: a disk full, a permission, a path of the wrong kind
            raise fail(os_error_line(e), 1) from None
        except Exception as e:
            raise internal_error(e) from None

    return wrapper


def internal_error(e: Exception) -> typer.Exit:
    """The last resort for an exception nobody expected: one line naming it and the file that keeps its
    traceback for a bug report; raise what this returns to exit with 1. With CDT_DEBUG set, `e` is raised."""
    if os.environ.get("CDT_DEBUG"):
        raise e
    saved = save_traceback()
    cause = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return fail(f"internal error {type(e).__name__}{': ' + cause if cause else ''} (a bug in cdt; "
                f"{'the traceback is in ' + str(saved) if saved else 'CDT_DEBUG=1 shows the traceback'})", 1)


def os_error_line(e: OSError) -> str:
    """'PATH: Permission denied' from an OSError (both paths of a failed rename)."""
    what = e.strerror or type(e).__name__
    names = [str(f) for f in (e.filename, e.filename2) if f is not None]
    return f"{' -> '.join(names)}: {what}" if names else what


def crash_dir() -> Path:
    """Where unexpected tracebacks are kept: $CDT_CRASH_DIR, else ~/.cache/cdt/crashes."""
    if os.environ.get("CDT_CRASH_DIR"):
        return Path(os.environ["CDT_CRASH_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cdt" / "crashes"


def save_traceback() -> Path | None:
    """The current exception's traceback, with the command line, in a new file; None if none could be written."""
    text = f"cdt {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for where in (crash_dir(), Path(tempfile.gettempdir())):
        try:
            where.mkdir(parents=True, exist_ok=True)
            (where / name).write_text(text, encoding="utf-8")
            return where / name
        except OSError:
            continue
    return None


class OneLineUsage(TyperGroup):
    """The command group whose parse errors (an unknown flag, a value of the wrong type) are one `error:` line
    and exit 2, like every other usage error, instead of click's usage box."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as e:
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                ctx = getattr(e, "ctx", None)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                fail(e.format_message().rstrip(".") + hint, e.exit_code)
            sys.exit(e.exit_code)
        except typer.Abort:
            fail("aborted", 1)
            sys.exit(1)
        except Exception as e:  # raised while parsing, before a command's own handler (friendly_errors) runs
            sys.exit(internal_error(e).exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int: the code of a typer.Exit the command raised


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
