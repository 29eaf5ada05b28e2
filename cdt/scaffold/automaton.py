"""Slot languages as automata over the model's characters, and the decoder that fills a slot with the most
probable string its automaton accepts (or one sampled from the model restricted to them).

A language is a small expression (`lit`, `chars`, `but`, `seq`, `alt`, `star`), compiled once into a DFA
over a vocabulary's characters. A slot of B positions holds an accepted string followed by [NULL] up to B,
so its table adds one state reached by [NULL] from any accepting state and left only by [NULL].

`fill` is dynamic programming over positions x automaton states (Viterbi at temperature 0, forward
filtering and backward sampling otherwise), the way DINGO constrains diffusion decoding to a regular
language: positions already committed keep their character, and because every committed character came
from an earlier accepted fill, a path through them always exists, so a slot never becomes uncompletable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from cdt.vocab import NULL_ID, SPECIALS, Vocab

# expressions: ("chars", frozenset) | ("but", frozenset) | ("seq", tuple) | ("alt", tuple) | ("star", expr)


def chars(cs) -> tuple:
    """Any one of the characters `cs`."""
    return ("chars", frozenset(cs))


def but(cs) -> tuple:
    """Any one character of the vocabulary except `cs`."""
    return ("but", frozenset(cs))


def lit(text: str) -> tuple:
    return seq(*(chars(c) for c in text))


def seq(*parts) -> tuple:
    return ("seq", tuple(parts))


def alt(*parts) -> tuple:
    return ("alt", tuple(parts))


def star(part) -> tuple:
    return ("star", part)


def opt(part) -> tuple:
    return alt(part, seq())


def plus(part) -> tuple:
    return seq(part, star(part))


def repeat(part, lo: int, hi: int) -> tuple:
    """`part` between lo and hi times."""
    return seq(*([part] * lo), *([opt(part)] * (hi - lo)))


def words(texts) -> tuple:
    """Exactly one of the strings `texts`."""
    return alt(*(lit(t) for t in sorted(set(texts))))


@dataclass
class Table:
    """A compiled slot language over one vocabulary: `next[s, v]` is the state after token v in state s
    (-1: refused); `final[s]` whether a slot may end in s. State 0 starts; the last state is the [NULL]
    tail. `shortest` is the fewest characters of an accepted string."""

    next: torch.Tensor  # (S, V) long
    final: torch.Tensor  # (S,) bool
    shortest: int

    @property
    def used(self) -> torch.Tensor:
        """The token ids some state accepts: the decoder works on these columns only."""
        return (self.next >= 0).any(dim=0).nonzero().flatten()


def _nfa(expr, alphabet: frozenset):
    """Thompson construction: (edges [(from, chars, to)], epsilon edges, start, end)."""
    edges, eps, count = [], [], [0]

    def new() -> int:
        count[0] += 1
        return count[0] - 1

    def build(e) -> tuple[int, int]:
        kind, arg = e
        if kind in ("chars", "but"):
            a, b = new(), new()
            edges.append((a, arg & alphabet if kind == "chars" else alphabet - arg, b))
            return a, b
        if kind == "seq":
            a = b = new()
            for part in arg:
                s, t = build(part)
                eps.append((b, s))
                b = t
            return a, b
        if kind == "alt":
            a, b = new(), new()
            for part in arg:
                s, t = build(part)
                eps.extend([(a, s), (t, b)])
            return a, b
        s, t = build(arg)  # star
        a, b = new(), new()
        eps.extend([(a, s), (t, b), (a, b), (t, s)])
        return a, b

    start, end = build(expr)
    return edges, eps, start, end, count[0]


def compile_language(expr, vocab: Vocab) -> Table:
    """The slot table of `expr` over `vocab`'s characters (cached: schemas repeat their types)."""
    return _compile(expr, vocab.chars)


@lru_cache(maxsize=512)
def _compile(expr, vocab_chars: tuple[str, ...]) -> Table:
    alphabet = frozenset(vocab_chars)
    edges, eps, start, end, n = _nfa(expr, alphabet)
    closure_of = [{i} for i in range(n)]
    eps_out = [[] for _ in range(n)]
    for a, b in eps:
        eps_out[a].append(b)
    for i in range(n):
        stack = [i]
        while stack:
            for j in eps_out[stack.pop()]:
                if j not in closure_of[i]:
                    closure_of[i].add(j)
                    stack.append(j)
    moves = [[] for _ in range(n)]
    for a, cs, b in edges:
        moves[a].append((cs, b))

    def close(states) -> frozenset:
        return frozenset().union(*(closure_of[s] for s in states))

    first = close({start})
    index, order, trans = {first: 0}, [first], []
    while len(trans) < len(order):
        here = order[len(trans)]
        out: dict[str, set] = {}
        for s in here:
            for cs, b in moves[s]:
                for c in cs:
                    out.setdefault(c, set()).add(b)
        row = {}
        for c, targets in out.items():
            t = close(targets)
            if t not in index:
                index[t] = len(order)
                order.append(t)
            row[c] = index[t]
        trans.append(row)
    ids = {c: i + len(SPECIALS) for i, c in enumerate(vocab_chars)}
    return _table(trans, [end in st for st in order], ids, len(SPECIALS) + len(vocab_chars))


def _table(trans, accepting, ids, vocab_size) -> Table:
    tail = len(trans)  # the state after the first [NULL]
    nxt = torch.full((tail + 1, vocab_size), -1, dtype=torch.long)
    for s, row in enumerate(trans):
        for c, t in row.items():
            nxt[s, ids[c]] = t
        if accepting[s]:
            nxt[s, NULL_ID] = tail
    nxt[tail, NULL_ID] = tail
    final = torch.tensor(list(accepting) + [True])
    # fewest characters to an accepting state (breadth-first)
    dist, frontier, seen = 0, {0}, {0}
    while frontier and not any(accepting[s] for s in frontier):
        frontier = {t for s in frontier for t in trans[s].values()} - seen
        seen |= frontier
        dist += 1
    return Table(nxt, final, dist if frontier else 10**9)


def fill(logp: torch.Tensor, fixed: torch.Tensor, table: Table, uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """(R, B) tokens for R slots of one language: each the most probable accepted string (uniforms=None), or
    one drawn from the model restricted to the language (one uniform (R, B) per position), given log-probs
    logp (R, B, V) and `fixed` (R, B): a committed token, or -1 where the position is open (a committed
    token the language never uses maps to column V, which leaves no path)."""
    cols = table.used.to(logp.device)  # a digit slot needs 12 of ~100 columns
    col_of = torch.full((logp.shape[-1],), len(cols), dtype=torch.long, device=logp.device)  # unused: column V
    col_of[cols] = torch.arange(len(cols), device=logp.device)
    logp, fixed = logp[..., cols].float(), torch.where(fixed >= 0, col_of[fixed.clamp_min(0)], -1)
    r, b, v = logp.shape
    nxt = table.next.to(logp.device)[:, cols]
    s = nxt.shape[0]
    refused = (nxt < 0).reshape(1, -1)  # (1, S*V)
    target = nxt.clamp_min(0).reshape(1, -1).expand(r, -1)
    greedy = uniforms is None
    alpha = torch.full((r, s), float("-inf"), device=logp.device)
    alpha[:, 0] = 0.0
    only = torch.full((r, b, v + 1), float("-inf"), device=logp.device).scatter(2, fixed.clamp_min(0)[..., None], 0.0)
    emit = torch.where(fixed[..., None] >= 0, logp + only[..., :-1], logp)  # a committed token alone may stay
    steps = []  # per position: the (R, S*V) scores of every (state, token), or their weights when sampling
    for i in range(b):
        cand = (alpha[:, :, None] + emit[:, i, None, :]).reshape(r, -1)
        cand = cand.masked_fill(refused, float("-inf"))
        alpha = torch.full((r, s), float("-inf"), device=logp.device)
        if greedy:
            alpha = alpha.scatter_reduce(1, target, cand, "amax")
            steps.append(cand)
        else:
            peak = cand.max(dim=1, keepdim=True).values.clamp_min(-1e30)
            weight = (cand - peak).exp()
            alpha = torch.zeros((r, s), device=logp.device).scatter_add(1, target, weight).log() + peak
            steps.append(weight)
    final = table.final.to(logp.device)
    if not torch.isfinite(alpha.masked_fill(~final[None], float("-inf")).max(dim=1).values).all():
        raise RuntimeError("a scaffold slot has no completion its language accepts")
    out = torch.empty((r, b), dtype=torch.long, device=logp.device)
    into = final[target]  # the last position: any step into a final state
    for i in reversed(range(b)):  # backwards: each position's (state, token) given the state after it
        if greedy:
            pick = steps[i].masked_fill(~into, float("-inf")).argmax(dim=1)
        else:
            pick = _draw(steps[i] * into, uniforms[:, i])
        state, out[:, i] = pick // v, pick % v
        into = target == state[:, None]
    return cols[out]


def _draw(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(R,) an index per row drawn with probability proportional to `weights` (>= 0), by inverse CDF with u."""
    cdf = weights.double().cumsum(dim=1)
    total = cdf[:, -1]
    at = torch.maximum(u.double() * total, total * 1e-15).clamp_max(total * (1 - 1e-12))  # never a zero weight
    return torch.searchsorted(cdf, at[:, None]).squeeze(1).clamp_max(weights.shape[1] - 1)
