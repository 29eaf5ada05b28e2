"""Each field type's slot language, as an automaton expression (`cdt.scaffold.automaton`).

A quoted slot (a string, or an enum of strings: the scaffold writes the quotes) holds the JSON-escaped
text between the quotes, so no character can end the string early; an optional one may stay empty (null).
Any other slot holds a complete JSON value: an integer `-?(0|[1-9][0-9]*)`, a number, `true`/`false`, one
of an enum's JSON texts, an array `[item, item]` of a variable number of items, an object inside an array;
an optional one may also hold `null`.
"""

from __future__ import annotations

import math

from cdt.scaffold.automaton import alt, but, chars, lit, opt, plus, repeat, seq, star, words
from cdt.scaffold.schema import ENUMERABLE, MAX_LISTED, Field, json_text

DIGIT = chars("0123456789")
NONZERO = chars("123456789")
CONTROL = {chr(i) for i in range(32)}
# one character of a JSON string's text: anything but a quote, a backslash or a control character, or an escape
STRING_CHAR = alt(but({'"', "\\"} | CONTROL), seq(lit("\\"), chars('"\\/bfnrt')))
SEP = lit(", ")


def _two(lo: str, hi: str) -> tuple:
    """Two digits from lo to hi (e.g. 01..12), as text."""
    return words(f"{i:02d}" for i in range(int(lo), int(hi) + 1))


DATE = seq(DIGIT, DIGIT, DIGIT, DIGIT, lit("-"), _two("01", "12"), lit("-"), _two("01", "31"))
TIME = seq(_two("00", "23"), lit(":"), _two("00", "59"), opt(seq(lit(":"), _two("00", "59"))))
FORMATS = {"date": DATE, "time": TIME, "date-time": seq(DATE, lit("T"), TIME)}


def slot_language(f: Field) -> tuple:
    """What the slot of `f` may hold (before its [NULL] padding)."""
    if f.quoted_by_scaffold:
        inner = _string_text(f)
        return opt(inner) if f.optional else inner
    value = json_language(f)
    return alt(value, lit("null")) if f.optional else value


def json_language(f: Field) -> tuple:
    """The JSON text of a value of `f`, quotes included (array items, objects inside arrays)."""
    if f.type == "string":
        return seq(lit('"'), _string_text(f), lit('"'))
    if f.type == "enum":
        return words(json_text(v) for v in f.enum)
    if f.type == "integer":
        return _integer(f)
    if f.type == "number":
        return _number(f.minimum, f.maximum)
    if f.type == "boolean":
        return words(["true", "false"])
    if f.type == "any":
        return alt(seq(lit('"'), plus(STRING_CHAR), lit('"')), integers(None, None), words(["true", "false"]))
    if f.type == "array":
        item = _maybe_null(f.items)
        most = f.max_items if f.max_items is not None and f.max_items <= MAX_LISTED else None
        if most is not None:
            body = alt(*(seq(item, *[seq(SEP, item)] * (n - 1)) for n in range(max(f.min_items, 1), most + 1)))
            body = opt(body) if f.min_items == 0 else body
        else:
            more = seq(item, repeat(seq(SEP, item), max(f.min_items - 1, 0), max(f.min_items - 1, 0)),
                       star(seq(SEP, item)))
            body = opt(more) if f.min_items == 0 else more
        return seq(lit("["), body, lit("]"))
    if f.type == "object":
        parts = [seq(lit(json_text(g.name) + ": "), _maybe_null(g)) for g in f.fields]
        inner = seq(*[p if i == 0 else seq(SEP, p) for i, p in enumerate(parts)])
        return seq(lit("{"), inner, lit("}"))
    raise ValueError(f"no slot language for type {f.type!r}")


def _maybe_null(f: Field) -> tuple:
    value = json_language(f)
    return alt(value, lit("null")) if f.optional else value


def _string_text(f: Field) -> tuple:
    if f.type == "enum":
        return words(json_text(v)[1:-1] for v in f.enum)
    if f.format is not None:
        return FORMATS[f.format]
    return plus(STRING_CHAR)


def _integer(f: Field) -> tuple:
    lo = None if f.minimum is None else math.ceil(f.minimum)
    hi = None if f.maximum is None else math.floor(f.maximum)
    if lo is not None and hi is not None and 0 <= hi - lo < ENUMERABLE:
        return words(str(i) for i in range(lo, hi + 1))
    return integers(lo, hi)


def integers(lo: int | None, hi: int | None) -> tuple:
    """Every integer from lo to hi (None: unbounded) as JSON writes it: exactly these, whatever the bounds."""
    return _signed(lo, hi, _naturals, 1)  # no "-0"


def _number(lo: float | None, hi: float | None) -> tuple:
    """Numbers (an integer part, an optional fraction) that lie within [lo, hi] whatever their digits: a
    fraction follows only an integer part n with n + 1 <= hi, so no draw of its digits can cross a bound."""
    return _signed(lo, hi, _non_negative, 0)


def _signed(lo, hi, magnitudes, least: int) -> tuple:
    """Values from lo to hi (None: unbounded) as a magnitude with an optional "-": `magnitudes(a, b)` gives
    the alternatives for magnitudes from a to b; `least` is the smallest magnitude written after a "-"."""
    parts = []
    if hi is None or hi >= 0:
        parts += magnitudes(max(lo, 0) if lo is not None else 0, hi)
    if lo is None or lo < 0:
        parts += [seq(lit("-"), p) for p in magnitudes(max(least, -hi) if hi is not None else least,
                                                        None if lo is None else -lo)]
    return alt(*parts)


def _non_negative(a: float, b: float | None) -> list:
    whole = _naturals(math.ceil(a), None if b is None else math.floor(b))
    fractional = _naturals(math.ceil(a), None if b is None else math.floor(b - 1))
    return whole + ([seq(alt(*fractional), lit("."), plus(DIGIT))] if fractional else [])


def _naturals(lo: int, hi: int | None) -> list:
    """Non-negative integers from lo to hi (None: unbounded) without leading zeros, as alternatives (none:
    the range is empty)."""
    if hi is not None and hi < lo:
        return []
    top = len(str(hi)) if hi is not None else len(str(lo))
    parts = []
    for k in range(len(str(lo)), top + 1):  # k-digit numbers
        a, b = max(lo, 10 ** (k - 1) if k > 1 else 0), 10**k - 1 if hi is None else min(hi, 10**k - 1)
        if a <= b:
            parts.append(_digits_between(str(a), str(b)))
    if hi is None:  # every number longer than lo
        parts.append(seq(NONZERO, *[DIGIT] * top, star(DIGIT)))
    return parts


def _digits_between(a: str, b: str) -> tuple:
    """Digit strings of the same length from a to b (a <= b)."""
    if not a:
        return seq()
    if a[0] == b[0]:
        return seq(lit(a[0]), _digits_between(a[1:], b[1:]))
    rest = len(a) - 1
    parts = [seq(lit(a[0]), _digits_between(a[1:], "9" * rest)), seq(lit(b[0]), _digits_between("0" * rest, b[1:]))]
    if int(b[0]) - int(a[0]) > 1:
        parts.append(seq(chars(str(d) for d in range(int(a[0]) + 1, int(b[0]))), *[DIGIT] * rest))
    return alt(*parts)
