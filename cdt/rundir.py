"""The run directory: what lives in it, how files get there, and how a run is stopped and watched.

    runs/small-20261203-101500/
        checkpoint.pt               model, optimizer, config, vocabulary, step (cdt/checkpoint.py)
        config.yaml                 the fully resolved config
        metrics.jsonl               one JSON object per line: kind "train" or "eval"
        calibration_scores.jsonl    per-sample scores from `cdt calibrate` (input of `cdt sweep-tau`)
        calibration_report.json     calibrate's report
        calibration.json            calibrate's map, read by the critic-calibrated policy

Every file is written whole or not at all (`atomic_write`), so a crash never leaves a
half-written one behind. No torch here: the CLI and the renderers import it cheaply.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from cdt.errors import CdtError, UsageError

try:
    import fcntl
except ImportError:  # Windows: outputs are not locked
    fcntl = None

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
SCORES_NAME = "calibration_scores.jsonl"
REPORT_NAME = "calibration_report.json"
MAP_NAME = "calibration.json"


def new_run_dir(name: str, parent: Path = Path("runs")) -> Path:
    """`runs/NAME-YYYYmmdd-HHMMSS`: where a run goes when `--out` is not given."""
    return parent / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_output(path: Path, flag: str, *, directory: bool = False, overwrite: bool | None = None) -> Path:
    """Refuse, before any work, an output a run could not write or would lose: a path of the wrong kind
    (a directory where a file goes, or the reverse), a parent that is a file or not writable, or, with
    overwrite=False, an existing file. overwrite=None: the file is one the command replaces by design."""
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; give a directory")
    if not directory and path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; give a file path")
    if not directory and overwrite is False and path.exists():
        raise UsageError(f"{flag} {path} exists; give a new path, or add --overwrite to replace it")
    where = path if directory else path.parent
    while not where.exists() and where != where.parent:  # the nearest folder that exists holds the new ones
        where = where.parent
    if not where.is_dir():
        raise UsageError(f"{flag} {path}: {where} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write in {where} ({e.strerror})") from None
    return path


class OutputLock:
    """An exclusive claim on `path` while a run writes it (`with OutputLock(path, flag):`): a second run that
    wants the same path is refused at once with a line naming the holder's process id (and `flag`, the
    option that chooses another path, when there is one). The claim is an
    advisory lock on `.NAME.lock` beside `path`, which the kernel drops if the process dies."""

    def __init__(self, path: Path, flag: str | None):
        self.path, self.flag = Path(path), flag
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd = None

    def __enter__(self) -> OutputLock:
        if fcntl is None:
            return self
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise CdtError(f"{self.path} is being written by another cdt run (process {holder}); wait for it "
                               f"to finish" + (f" or choose another {self.flag}" if self.flag else "")) from None
            try:  # the holder before us may have removed the file we opened: claim the one on disk
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self._fd = fd
            else:
                os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.lock_path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename over `path`; the old file survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, doc: dict) -> None:
    """`atomic_write` of one indented JSON document (values JSON cannot hold are written as text)."""
    write_text(path, json.dumps(doc, indent=2, default=str) + "\n")


class MetricsLog:
    """JSON lines in the run directory; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until: int | None):
        self.path = path
        if keep_until is not None and path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= keep_until]
            write_text(path, "".join(ln + "\n" for ln in kept))
        elif path.exists():
            path.unlink()

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class Reporter:
    """Progress callbacks of a training run; the default does nothing (the CLI passes a rich display)."""

    def on_start(self, info: dict) -> None: ...

    def on_log(self, record: dict) -> None: ...

    def on_eval(self, record: dict) -> None: ...

    def on_message(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)  # shown even without a display

    def on_end(self, result) -> None: ...


class StopRequest:
    """Set by SIGINT/SIGTERM (or a test); a training loop saves a checkpoint and returns."""

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self, signum, frame):
        if self.signal_name is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> dict:
        """Handle SIGINT and SIGTERM (main thread only); returns the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def restore(previous: dict) -> None:
        """Give the caller back the handlers `install` replaced."""
        for sig, handler in previous.items():
            signal.signal(sig, handler)
