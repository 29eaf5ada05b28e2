"""Expected failures: a one-line cause for the user and an exit code, never a traceback."""


class CdtError(Exception):
    """A failure the user can act on. exit_code 2 = bad usage, 1 = runtime failure."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(CdtError):
    """Bad flags, presets or config keys (exit code 2)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def warning(text: str) -> None:
    """One line on stderr about a setting cdt adjusted or will stop accepting; the run goes on."""
    import sys

    print(f"warning: {text}", file=sys.stderr)


def deprecated(old: str, new: str) -> None:
    """One line on stderr for an old spelling that still works, naming the one to use instead."""
    warning(f"{old} is deprecated and will be removed; use {new}")
