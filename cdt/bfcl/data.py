"""BFCL's data, read as files: the requests, the functions offered with each, and the possible answers.

The files come from an installed `bfcl-eval` package (found without importing it: its imports pull
every vendor's SDK) or from a folder given with `--data` that holds `BFCL_v*_CATEGORY.json` and
`possible_answer/`. Install the data alone with `pip install --no-deps bfcl-eval`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cdt.errors import CdtError, UsageError
from cdt.settings import BFCL_CATEGORIES as CATEGORIES  # the categories read: single-turn, one expected call

INSTALL = "pip install --no-deps bfcl-eval"


@dataclass(frozen=True)
class Item:
    id: str
    request: str  # the user's words, whitespace runs as one space
    functions: list  # the function definitions offered, as BFCL writes them
    expected: dict  # {function name: {argument: [possible values]}}


def data_dir(given: Path | None = None) -> Path:
    """The folder of BFCL's data files: `given`, or the installed package's `data/`."""
    if given is not None:
        if not Path(given).is_dir():
            raise UsageError(f"--data {given}: not a folder (it should hold BFCL_v*_simple_python.json and "
                             "possible_answer/)")
        return Path(given)
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise CdtError(f"BFCL's data is not installed: {INSTALL} (data only), or give --data DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def category_file(folder: Path, category: str, answers: bool = False) -> Path:
    """The newest-version file of a category (`BFCL_v4_multiple.json`), or its possible answers."""
    if category not in CATEGORIES:
        raise UsageError(f"unknown BFCL category {category!r}; cdt reads {', '.join(CATEGORIES)}")
    where = folder / "possible_answer" if answers else folder
    named = re.compile(rf"BFCL_v(\d+)_{category}\.json")  # not BFCL_v4_live_multiple.json for multiple
    found = sorted((p for p in where.glob("BFCL_v*.json") if named.fullmatch(p.name)),
                   key=lambda p: int(named.fullmatch(p.name).group(1)))
    if not found:
        raise CdtError(f"no BFCL {'answers' if answers else 'data'} for {category} in {where} "
                       f"(expected BFCL_v*_{category}.json)")
    return found[-1]


def _lines(path: Path) -> list[dict]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CdtError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
    return out


def load(folder: Path, category: str) -> list[Item]:
    """Every request of a category with its functions and possible answers, in file order."""
    answers = {a["id"]: a["ground_truth"] for a in _lines(category_file(folder, category, answers=True))}
    items = []
    for q in _lines(category_file(folder, category)):
        truth = answers.get(q["id"])
        if truth is None or len(truth) != 1:
            continue  # not one expected call: outside what this benchmark scores
        turns = q["question"][0] if q["question"] and isinstance(q["question"][0], list) else q["question"]
        words = " ".join(m["content"] for m in turns if m.get("role") == "user")
        items.append(Item(q["id"], " ".join(words.split()), q["function"], truth[0]))
    return items
