"""Reading a filled call: parse it, check every field against its schema (nested ones too), and the JSON
Schema a filled call satisfies, for an outside validator."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from cdt.scaffold.schema import Field, Schema, json_text

@dataclass
class Parsed:
    call: dict | None  # the parsed JSON, when it parses
    errors: list[str]  # one line per problem: which field, what was generated

    @property
    def valid(self) -> bool:
        return self.call is not None and not self.errors


DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
TIME = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?"
FORMAT_RE = {"date": DATE, "time": TIME, "date-time": f"{DATE}T{TIME}"}


def problems(f: Field, v, where: str) -> list[str]:
    """What is wrong with value `v` for field `f` (nothing: it validates); `where` names it."""
    if v is None:
        return [] if f.optional else [f"{where}: generated null, expected {_wanted(f)}"]
    bad = [f"{where}: generated {json_text(v)}, expected {_wanted(f)}"]
    if f.type == "object":
        if not isinstance(v, dict):
            return bad
        out = [f"{where}.{g.name}: missing" for g in f.fields if g.name not in v and not g.optional]
        return out + [e for g in f.fields if g.name in v for e in problems(g, v[g.name], f"{where}.{g.name}")]
    if f.type == "array":
        if not isinstance(v, list) or len(v) < f.min_items or (f.max_items is not None and len(v) > f.max_items):
            return bad
        return [e for i, item in enumerate(v) for e in problems(f.items, item, f"{where}[{i}]")]
    ok = {"string": lambda: isinstance(v, str) and v != "" and (
              f.format is None or re.fullmatch(FORMAT_RE[f.format], v) is not None),
          "integer": lambda: type(v) is int and _within(f, v),
          "number": lambda: type(v) in (int, float) and _within(f, v),
          "boolean": lambda: type(v) is bool,
          "enum": lambda: json_text(v) in {json_text(e) for e in f.enum},
          "any": lambda: isinstance(v, (str, int, float, bool))}[f.type]()
    return [] if ok else bad


def _within(f: Field, v) -> bool:
    return (f.minimum is None or v >= f.minimum) and (f.maximum is None or v <= f.maximum)


def _wanted(f: Field) -> str:
    want = (f"one of {', '.join(str(v) if isinstance(v, str) else json_text(v) for v in f.enum)}"
            if f.type == "enum" else f"a {f.type}")
    return want + (" or null" if f.optional else "")


def parse(schema: Schema | list[Schema], text: str) -> Parsed:
    """json.loads the generated call and check every field's type, enum and presence, nested ones too;
    never raises. With several tools, the call's name picks the schema. An empty optional string or enum
    slot reads as null."""
    tools = [schema] if isinstance(schema, Schema) else list(schema)
    try:
        call = json.loads(text)
    except json.JSONDecodeError as e:
        return Parsed(None, [f"not valid JSON ({e.msg} at character {e.pos}): {text!r}"])
    args = call.get("arguments") if isinstance(call, dict) else None
    if not isinstance(args, dict):
        return Parsed(None, [f"no arguments object in {text!r}"])
    chosen = next((t for t in tools if t.tool == call.get("name")), None)
    if chosen is None:
        return Parsed(call, [f"tool {call.get('name')!r} is not one of {', '.join(t.tool for t in tools)}"])
    _nulls(chosen.fields, args)
    errors = []
    for f in chosen.fields:
        if f.name not in args:
            errors.append(f"field {f.name!r}: missing")
        else:
            errors += problems(f, args[f.name], f"field {f.name!r}")
    return Parsed(call, errors)


def _nulls(fields, args: dict) -> None:
    """An empty optional quoted slot means null (in nested objects too)."""
    for f in fields:
        if f.name in args and args[f.name] == "" and f.optional and f.quoted_by_scaffold:
            args[f.name] = None
        elif f.type == "object" and isinstance(args.get(f.name), dict):
            _nulls(f.fields, args[f.name])


def json_schema(schema: Schema) -> dict:
    """The JSON Schema a filled call of `schema` satisfies ({"name", "arguments"}), for a validator."""
    return {"type": "object", "required": ["name", "arguments"],
            "properties": {"name": {"const": schema.tool}, "arguments": _object_schema(schema.fields)}}


def _object_schema(fields) -> dict:
    return {"type": "object", "properties": {f.name: _value_schema(f) for f in fields},
            "required": [f.name for f in fields]}


def _value_schema(f: Field) -> dict:
    if f.type == "object":
        out = _object_schema(f.fields)
    elif f.type == "array":
        out = {"type": "array", "items": _value_schema(f.items), "minItems": f.min_items}
        out |= {"maxItems": f.max_items} if f.max_items is not None else {}
    elif f.type == "enum":
        out = {"enum": list(f.enum)}
    elif f.type == "any":
        out = {"type": ["string", "number", "boolean"]}
    else:
        out = {"type": f.type} | ({"minLength": 1} if f.type == "string" else {})
        out |= {k: getattr(f, k) for k in ("minimum", "maximum") if getattr(f, k) is not None}
        out |= {"pattern": f"^{FORMAT_RE[f.format]}$"} if f.format else {}
    if f.optional and f.type != "object":
        out = {"anyOf": [out, {"type": "null"}]}
    return out
