"""The per-sample scores file (JSON lines) and the threshold reports: the files between the two passes.

One sample per line: at least {"id", "score", "label"} (label 1 = the sample is wrong),
optionally more score fields, "group", "text", "reference". `calibrate` writes it,
`sweep-tau` reads it; nothing else defines the format.
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdt.errors import CdtError


@dataclass
class Scores:
    scores: np.ndarray  # (n,) float64
    labels: np.ndarray  # (n,) int64, 0 or 1
    ids: list
    texts: list | None  # None when no line has "text"
    groups: list | None = None  # each sample's "group" (its prompt); None when no line has one
    model: str | None = None  # the "model" field of the first line, when present
    source: str = ""


def _label(value, lineno: int, key: str, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise CdtError(f"{where} line {lineno}: {key!r} must be 0 or 1 (1 = wrong), got {value!r}")


def _score(value, lineno: int, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CdtError(f"{where} line {lineno}: {key!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise CdtError(f"{where} line {lineno}: {key!r} is {value} (NaN and infinite scores cannot be swept)")
    return float(value)


def read_scores(source: str | Path, score_key: str = "score", label_key: str = "label") -> Scores:
    """Parse a scores file ('-' = stdin); every problem is a one-line error naming the line."""
    where = "stdin" if str(source) == "-" else str(source)
    if str(source) == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if path.is_dir():
            raise CdtError(f"the scores file {path} is a directory; give the file (e.g. {path / 'calibration_scores.jsonl'})")
        if not path.is_file():
            raise CdtError(f"scores file not found: {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise CdtError(f"scores file is not UTF-8 text: {path}") from None
    scores, labels, ids, texts, groups, model = [], [], [], [], [], None
    first_line = {}  # id -> the line that gave it
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CdtError(f"{where} line {lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise CdtError(f"{where} line {lineno}: expected a JSON object, got {type(obj).__name__}")
        for key in (score_key, label_key):
            if key not in obj:
                raise CdtError(f"{where} line {lineno}: missing key {key!r} (keys: {', '.join(obj) or 'none'})")
        scores.append(_score(obj[score_key], lineno, score_key, where))
        labels.append(_label(obj[label_key], lineno, label_key, where))
        ident = obj.get("id", lineno)
        if first_line.setdefault(json.dumps(ident), lineno) != lineno:
            raise CdtError(f"{where} line {lineno}: id {ident!r} repeats line {first_line[json.dumps(ident)]}'s "
                           "(each sample once; were two scores files joined?)")
        ids.append(ident)
        texts.append(obj.get("text"))
        groups.append((obj.get("group"), lineno))
        if model is None and isinstance(obj.get("model"), str):
            model = obj["model"]
    if not scores:
        raise CdtError(f"{where} holds no samples")
    missing = [lineno for g, lineno in groups if g is None]
    if missing and len(missing) < len(groups):
        raise CdtError(f"{where} line {missing[0]}: no 'group' where other lines have one (a sample without "
                       "its prompt's group cannot be resampled with it)")
    groups = None if missing else [g for g, _ in groups]
    return Scores(np.array(scores), np.array(labels, dtype=np.int64), ids,
                  texts if any(t is not None for t in texts) else None,
                  groups, model, where)


STALE_AFTER_S = 60.0  # a `.writing` file untouched this long, whose process is gone, was left by a hard kill


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # alive under another user, or cannot tell: leave its file alone
    return False


def _whole_lines(data: bytes) -> bytes:
    """`data` up to its last complete line (a hard kill can stop a file mid-line)."""
    return data[: data.rfind(b"\n") + 1]


def recover_stale(path: Path, now: float | None = None) -> str | None:
    """Tidy what a hard-killed run (SIGKILL, out of memory, power loss) left beside `path`: its
    `<name>.<pid>.writing`. As for a run stopped by Ctrl-C, the newest interrupted run with lines
    becomes `<name>.partial` (cut to whole lines), and older ones are removed. Returns a line saying
    what was kept, or None when there was nothing to tidy. A file whose process may still run, or
    that changed in the last minute, is left alone."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    now = time.time() if now is None else now
    changed, pids = {}, {}  # file -> when it last changed (read before anything is rewritten), its writer
    for f in path.parent.glob(f"{glob.escape(path.name)}.*.writing"):
        pid = f.name[len(path.name) + 1 : -len(".writing")]
        if pid.isdigit() and int(pid) != os.getpid() and _process_gone(int(pid)) \
                and now - f.stat().st_mtime > STALE_AFTER_S:
            changed[f], pids[f] = f.stat().st_mtime, pid
    if not changed:
        return None
    kept = {f: _whole_lines(f.read_bytes()) for f in changed}
    candidates = {f: t for f, t in changed.items() if kept[f]} | (
        {partial: partial.stat().st_mtime} if partial.exists() else {})
    newest = max(candidates, key=candidates.get, default=None)
    for f in changed:
        if f != newest:
            f.unlink()
    if newest is None:
        return None
    if newest == partial:
        return f"removed {len(changed)} unfinished file(s) of older runs beside {path}; {partial} is newer and stays"
    newest.write_bytes(kept[newest])
    newest.replace(partial)
    n = kept[newest].count(b"\n")
    return (f"a run that was killed (process {pids[newest]}) left {n} line{'s' if n != 1 else ''} in {newest.name}; "
            f"they are kept in {partial}")


class ScoreWriter:
    """Streams sample lines to `<name>.<pid>.writing` beside `path`, which becomes `path` once complete.
    Interrupted, the lines written so far become `<name>.partial`; with none written, an earlier
    `<name>.partial` stays as it was (a rerun stopped early loses nothing an earlier one kept). What a
    hard-killed run left is tidied first the same way (`recover_stale`; the line is in `recovered`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered = recover_stale(self.path)
        self._writing = self.path.with_name(f"{self.path.name}.{os.getpid()}.writing")
        self._f = open(self._writing, "w", encoding="utf-8")
        self.count = 0

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self, complete: bool = True) -> Path | None:
        """Complete: rename into place. Interrupted: keep the lines so far as `<name>.partial` (None: none)."""
        self._f.close()
        if complete:
            self._writing.replace(self.path)
            return self.path
        if not self.count:
            self._writing.unlink(missing_ok=True)
            return None
        self._writing.replace(self.partial)
        return self.partial


def safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return keep or "scores"


def write_report(doc: dict, out_dir: Path, model: str, n: int) -> Path:
    """`{model}_{timestamp}_n{n}.json` under out_dir, created exclusively: an earlier report is never replaced."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CdtError(f"cannot create {out_dir}: {e.strerror}") from None
    stem = f"{safe_name(model)}_{time.strftime('%Y%m%d-%H%M%S')}_n{n}"
    for attempt in range(1, 1000):
        path = out_dir / (stem + (f"-{attempt}" if attempt > 1 else "") + ".json")
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
            return path
        except FileExistsError:
            continue
    raise CdtError(f"could not find a free report name under {out_dir}")

