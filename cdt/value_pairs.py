"""Samples and (right, wrong) pairs for the sequence-level value head.

Samples come from `cdt calibrate --samples-per-prompt K`: one JSON line per generation with
`group` (the prompt), `text` (the generated region), `context` (the protected text before
and after it) and `label` (1 = wrong, from the verifier). A pair joins a right and a wrong
answer to the same prompt, so the only difference the head can learn is what makes an
answer wrong, never which prompt it is looking at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdt.errors import CdtError


@dataclass(frozen=True)
class Sample:
    id: str
    group: int
    label: int  # 1 = wrong
    before: str  # protected text before the generated region
    text: str  # the generated region
    after: str  # protected text after it


def load_samples(path: Path) -> list[Sample]:
    """Read a calibrate scores file; every line needs group, label, text and context."""
    path = Path(path)
    if not path.is_file():
        raise CdtError(f"samples file not found: {path}")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            ctx = obj["context"]
            out.append(Sample(str(obj.get("id", lineno)), int(obj["group"]), int(obj["label"]), str(ctx[0]),
                              str(obj["text"]), str(ctx[1])))
        except json.JSONDecodeError as e:
            raise CdtError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise CdtError(f"{path} line {lineno}: needs group, label, text and context "
                           f"(a cdt calibrate scores file): {e!r}") from None
        if out[-1].label not in (0, 1):
            raise CdtError(f"{path} line {lineno}: label must be 0 or 1")
    if not out:
        raise CdtError(f"{path} holds no samples")
    return out


def split_groups(groups, val_share: float, seed: int) -> tuple[set[int], set[int]]:
    """Disjoint train and validation groups: a seeded shuffle of the distinct groups."""
    distinct = sorted(set(groups))
    order = np.random.default_rng([seed, 17]).permutation(len(distinct))
    n_val = max(1, round(val_share * len(distinct))) if len(distinct) > 1 else 0
    val = {distinct[i] for i in order[:n_val]}
    return set(distinct) - val, val


def build_pairs(samples: list[Sample], groups: set[int], n_pairs: int, seed: int) -> list[tuple[int, int]]:
    """(right index, wrong index) for every right/wrong pair inside one of `groups`, sampled down to
    n_pairs without replacement (seeded); never across groups, never twice."""
    by_group: dict[int, tuple[list[int], list[int]]] = {}
    for i, s in enumerate(samples):
        if s.group in groups:
            by_group.setdefault(s.group, ([], []))[s.label].append(i)
    pairs = [(r, w) for g in sorted(by_group) for r in by_group[g][0] for w in by_group[g][1]]
    if len(pairs) > n_pairs:
        keep = np.sort(np.random.default_rng([seed, 23]).choice(len(pairs), size=n_pairs, replace=False))
        pairs = [pairs[i] for i in keep]
    return pairs


def mixed_groups(samples: list[Sample], groups: set[int]) -> int:
    """How many of `groups` have both a right and a wrong answer (the only ones that make pairs)."""
    labels: dict[int, set[int]] = {}
    for s in samples:
        if s.group in groups:
            labels.setdefault(s.group, set()).add(s.label)
    return sum(len(v) == 2 for v in labels.values())
