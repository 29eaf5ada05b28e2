"""The explorer's interactive loop: raw keys in, rich frames out, the terminal restored on any exit."""

from __future__ import annotations

import os
import sys
import termios
import tty

from rich.console import Console
from rich.live import Live

from cdt.explore import Explorer
from cdt.render import frame_view

KEYS = {
    "n": "next", "l": "next", " ": "next", "\x1b[C": "next",
    "b": "prev", "h": "prev", "\x1b[D": "prev",
    "j": "next_sample", "\x1b[B": "next_sample",
    "k": "prev_sample", "\x1b[A": "prev_sample",
    "r": "remask", "+": "more", "=": "more", "-": "less",
    "c": "colour", "p": "policy", ">": "rand_up", ".": "rand_up", "<": "rand_down", ",": "rand_down",
    "q": "quit", "\x1b": "quit", "\x03": "quit", "\x04": "quit",
}


def split_keys(data: str) -> list[str]:
    """Bytes read at once may hold several keys; arrow keys are three-character escape sequences."""
    keys, i = [], 0
    while i < len(data):
        if data.startswith("\x1b[", i) and i + 2 < len(data):
            keys.append(data[i : i + 3])
            i += 3
        else:
            keys.append(data[i])
            i += 1
    return keys


def run_interactive(ex: Explorer, console: Console) -> None:
    """Until `q`, Esc or Ctrl-C: draw the frame, read a key, apply it."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                # NO_COLOR: the plain view's decile line carries the heatmap that colour would
                live.update(frame_view(ex, plain=console.no_color, width=console.width, interactive=True,
                                       height=console.height), refresh=True)
                data = os.read(fd, 32).decode("utf-8", errors="ignore")
                if not data:  # end of input
                    return
                if not all(ex.handle(KEYS.get(key, "")) for key in split_keys(data)):
                    return
    except KeyboardInterrupt:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
