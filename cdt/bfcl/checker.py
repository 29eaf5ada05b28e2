"""BFCL's AST rules for one Python call, implemented here (BFCL's own checker imports every vendor's
model table, so cdt cannot call it): the right function, every required argument, no unknown one, each
value of the declared type and among the possible answers, where a possible answer `""` means the
argument may be left out.

Values compare as BFCL compares them: strings (alone, in lists, in dicts) after `standardize`
(case, spaces and `,./-_*^` ignored); an integer where a float is declared counts as that float; a
value of the possible answers' type where another is declared is read as a variable and compared
as it is. An argument the call leaves `null` counts as left out (BFCL's calls are Python calls,
where an omitted argument takes its default), unless `None` is itself one of its possible answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TYPES = {"string": str, "integer": int, "float": float, "number": float, "boolean": bool, "array": list,
         "tuple": list, "dict": dict, "object": dict, "any": str}
_IGNORED = re.compile(r"[ ,./\-_*^]")


def standardize(text: str) -> str:
    """A string as BFCL compares it: without spaces and `,./-_*^`, lower case, single quotes as double."""
    return _IGNORED.sub("", text).lower().replace("'", '"')


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error: str = ""  # what is wrong, one line (empty when ok)
    kind: str = ""  # unparsed | wrong_name | missing_required | unexpected | type | value | missing_optional


def check_call(functions: list[dict], call: dict | None, expected: dict) -> Verdict:
    """Is `call` ({"name", "arguments"}, as a scaffold writes it; None: it did not parse) right for
    `expected` ({function name: {argument: [possible values]}}), given the offered `functions`?"""
    if call is None:
        return Verdict(False, "the call does not parse", "unparsed")
    name, possible = next(iter(expected.items()))
    if call.get("name") != name:
        return Verdict(False, f"called {call.get('name')!r}, expected {name!r}", "wrong_name")
    spec = next(f for f in functions if f["name"] == name)["parameters"]
    given = call.get("arguments") or {}
    args = _present(given)
    args.update({k: None for k, v in given.items() if v is None and None in possible.get(k, [])})
    for p in spec.get("required", []):
        if p not in args:
            return Verdict(False, f"missing required argument {p!r}", "missing_required")
    for p, v in args.items():
        if p not in spec["properties"] or p not in possible:
            return Verdict(False, f"unexpected argument {p!r}", "unexpected")
        verdict = check_value(spec["properties"][p], p, v, possible[p])
        if not verdict.ok:
            return verdict
    for p, options in possible.items():
        if p not in args and "" not in options:
            return Verdict(False, f"argument {p!r} left out, and it has no default", "missing_optional")
    return Verdict(True)


def check_value(prop: dict, param: str, value, options: list) -> Verdict:
    """One argument's value against its declared type and its possible answers."""
    declared = prop.get("type")
    kind = TYPES.get(declared, str)
    nested = TYPES.get((prop.get("items") or {}).get("type")) if declared in ("array", "tuple") else None
    if declared in ("float", "number") and type(value) is int:
        value = float(value)
    ok, variable = _type_ok(value, options, kind, nested)
    if not ok:
        return Verdict(False, f"{param}: {value!r} is not a {declared}", "type")
    right = True
    if not variable and kind is dict:
        right = _dict_ok(value, options)
    elif not variable and kind is list and nested is dict:
        right = _dict_list_ok(value, options)
    elif not variable and kind is str:
        right = standardize(value) in [standardize(o) for o in options if isinstance(o, str)]
    elif not variable and kind is list:  # BFCL reads each possible answer as a list, so "" reads as []
        right = _standard(value) in [_standard(list(o)) for o in options if isinstance(o, (list, str, dict))]
    else:
        right = value in options
    return Verdict(True) if right else Verdict(False, f"{param}: {value!r} is not among {options!r}", "value")


def _present(args: dict) -> dict:
    """The arguments a call gives, null ones (and null fields of objects) left out."""
    return {k: _present(v) if isinstance(v, dict) else v for k, v in args.items() if v is not None}


def _answer_type(options: list):
    """The type of the first possible answer that is not `""` (None when there is none)."""
    return next((type(o) for o in options if o != ""), None)


def _type_ok(value, options: list, kind: type, nested: type | None) -> tuple[bool, bool]:
    """(the value's type is acceptable, it is read as a variable): BFCL's type check, one level deep."""
    answer = _answer_type(options)
    variable = answer is not None and answer is not kind
    if type(value) is kind:
        if nested is None:
            return True, variable
        for option in options:  # the items must fit one possible answer's item types
            if not isinstance(option, list) or all(_type_ok(v, option, nested, None)[0] for v in value):
                return True, variable
        return False, variable
    return (answer is not None and type(value) is answer), True


def _standard(values: list) -> list:
    return [standardize(v) if isinstance(v, str) else v for v in values]


def _dict_ok(value: dict, options: list) -> bool:
    """A dict value matches one possible dict: every key known and right, every key it lacks optional."""
    for option in options:
        if option == "" or not isinstance(option, dict):
            continue
        keys_ok = all(k in option and (standardize(v) if isinstance(v, str) else v) in _standard(option[k])
                      for k, v in value.items())
        if keys_ok and all(k in value or "" in v for k, v in option.items()):
            return True
    return False


def _dict_list_ok(value: list, options: list) -> bool:
    """A list of dicts matches one possible list, dict by dict in order."""
    return any(isinstance(option, list) and len(option) == len(value)
               and all(_dict_ok(v, [o]) for v, o in zip(value, option)) for option in options)
