"""Slot languages as automata over the model's tokens, and the decoder that fills a slot with the most
probable string its automaton accepts (or one sampled from the model restricted to them).

A language is a small expression (`lit`, `chars`, `but`, `seq`, `alt`, `star`), compiled once into a DFA
over characters, then lifted to the vocabulary's tokens (a token runs the DFA over its piece). A slot of
B positions holds an accepted string's tokens followed by [NULL] up to B, so its table adds one state
reached by [NULL] from any accepting state and left only by [NULL].

`fill` is dynamic programming over positions x automaton states (Viterbi at temperature 0, forward
filtering and backward sampling otherwise), the way DINGO constrains diffusion decoding to a regular
language: positions already committed keep their character, and because every committed character came
from an earlier accepted fill, a path through them always exists, so a slot never becomes uncompletable.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from cdt.vocab import NULL_ID

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
    tail. `shortest` is the fewest tokens of an accepted string."""

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


def compile_language(expr, vocab) -> Table:
    """The slot table of `expr` over `vocab`'s tokens (cached: schemas repeat their types). A token moves
    the automaton through every character of its piece (one character each in the character vocabulary,
    several for a subword tokenizer), so a slot holds exactly the strings the language accepts, however
    they are cut into tokens."""
    return _compile(expr, vocab.slot_pieces())


@lru_cache(maxsize=512)
def _compile(expr, pieces: tuple) -> Table:
    alphabet = sorted({c for p in pieces if p for c in p})
    trans, accepting = _dfa(expr, frozenset(alphabet))
    return _table(_by_token(trans, alphabet, pieces), accepting)


def _dfa(expr, alphabet: frozenset) -> tuple[list[dict], list[bool]]:
    """Subset construction: each state's {character: next state}, and which states accept (state 0 starts)."""
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
    return trans, [end in st for st in order]


def _by_token(trans: list[dict], alphabet: list[str], pieces: tuple) -> np.ndarray:
    """(S, V) the state after each token from each state (-1: refused): the character automaton run over the
    token's piece, all tokens and states at once, one character column at a time."""
    dead = len(trans)
    col = {c: i for i, c in enumerate(alphabet)}
    by_char = np.full((dead + 1, len(alphabet)), dead, dtype=np.int64)
    for s, row in enumerate(trans):
        for c, t in row.items():
            by_char[s, col[c]] = t
    longest = max((len(p) for p in pieces if p), default=0)
    codes = np.full((len(pieces), longest), -1, dtype=np.int64)
    for v, p in enumerate(pieces):
        if p:
            codes[v, : len(p)] = [col[c] for c in p]
    state = np.repeat(np.arange(dead)[:, None], len(pieces), axis=1)
    state[:, [not p for p in pieces]] = dead  # a special, an empty piece or a broken byte: never in a slot
    for j in range(longest):
        on = codes[:, j] >= 0
        state[:, on] = by_char[state[:, on], codes[on, j]]
    return np.where(state == dead, -1, state)


def _table(by_token: np.ndarray, accepting: list[bool]) -> Table:
    """The slot table: the states a token boundary can reach from the start (in their order, so a character
    vocabulary keeps every state and its numbering), each accepting one left by [NULL] into the tail,
    which only [NULL] leaves."""
    depth = {0: 0}
    reach = [0]
    for s in reach:  # breadth-first: a state's depth is the fewest tokens that reach it
        for t in np.unique(by_token[s][by_token[s] >= 0]).tolist():
            if t not in depth:
                depth[t] = depth[s] + 1
                reach.append(t)
    order = sorted(reach)
    new = np.full(len(by_token) + 1, -1, dtype=np.int64)  # old state -> new (the last entry: -1 stays -1)
    new[order] = np.arange(len(order))
    nxt = torch.from_numpy(new[by_token[order]])
    nxt = torch.cat([nxt, torch.full((1, nxt.shape[1]), -1, dtype=torch.long)])
    final = torch.tensor([accepting[s] for s in order] + [True])
    nxt[final, NULL_ID] = len(order)
    shortest = min((depth[s] for s in order if accepting[s]), default=10**9)
    return Table(nxt, final, shortest)


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
