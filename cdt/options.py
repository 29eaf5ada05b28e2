"""How flags are declared, once: a command's settings dataclass becomes its flags (`@settings`), and
the few plain options several commands take are `Annotated` aliases (`checkpoint: Checkpoint`).

A setting such as the sampling policy is declared, helped and validated in one place (its field
in `cdt/settings.py`) and reaches the library as one settings object. No torch here: `--help`
stays fast.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Optional

import typer

from cdt.errors import UsageError, deprecated
from cdt.settings import DEVICE_HELP, from_flags, leaf_fields

Checkpoint = Annotated[Path, typer.Option("--checkpoint", help="Checkpoint file, or the run directory that holds it.",
                                          show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else there.")]
Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace output files named by flags that already "
                                         "exist (otherwise such a file is refused before any work).")]


def settings(cls, param: str):
    """Give a command the flags of settings dataclass `cls` (its `flag()` fields, a nested dataclass's
    too) in place of its parameter `param`; the command receives one `cls`, validated before it runs."""
    flags = list(_flags(cls()))

    def decorate(fn):
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                  for p in inspect.signature(fn, eval_str=True).parameters.values()]
        at = [p.name for p in params].index(param)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            obj = from_flags(cls, **{p.name: kwargs.pop(p.name) for p in flags})
            obj.validate()
            return fn(*args, **kwargs, **{param: obj})

        wrapper.__signature__ = inspect.Signature(params[:at] + flags + params[at + 1:])
        return wrapper

    return decorate


def _flags(obj):
    """A typer parameter for every flag of settings object `obj`, its default taken from `obj`."""
    for f, kind, default, panel in leaf_fields(obj):
        if "help" not in f.metadata:
            continue
        if typing.get_origin(kind) is tuple:  # a comma-separated list on the command line
            kind, default = str, ",".join(map(str, default))
        elif type(None) in typing.get_args(kind):
            kind = Optional[next(a for a in typing.get_args(kind) if a is not type(None))]
        option = typer.Option(default, f.metadata["name"] or "--" + f.name.replace("_", "-"), help=f.metadata["help"],
                              rich_help_panel=panel, show_default=default is not None)
        yield inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)


def renamed(old_flag: str, old_value, new_flag: str, new_value, new_default=None):
    """The value of a flag that has a deprecated spelling: the old one still works, with a warning."""
    if old_value is None:
        return new_value
    if new_value != new_default:
        raise UsageError(f"give {new_flag} or {old_flag} (its old name), not both")
    deprecated(old_flag, new_flag)
    return old_value
