"""What a scaffold is made of: a tool's fields with their JSON types and slot budgets, where a
schema comes from (a built-in toolcalls tool or a JSON Schema file), and how a filled call is read."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from cdt.data.toolcalls import TOOLS
from cdt.errors import CdtError, UsageError

TYPES = ("string", "integer", "number", "boolean", "enum", "array", "object", "any")
DEFAULT_BUDGET = {"string": 16, "integer": 4, "number": 8, "boolean": 5, "any": 18}
ARRAY_ITEMS = 3  # items an array slot has room for when the schema sets no maxItems
FORMATS = {"date": 10, "time": 8, "date-time": 19}  # the formats a slot language expresses, and their lengths
ENUMERABLE = 256  # integer ranges up to this many values are listed value by value (any range is exact)
MAX_LISTED = 8  # arrays count their items up to this maxItems; a larger one is bounded by the slot alone
# built-in tools: raw characters of the longest value in the corpus, plus slack
BUILTIN_BUDGETS = {
    ("get_weather", "city"): 14, ("set_alarm", "time"): 5, ("set_alarm", "label"): 14,
    ("convert_currency", "from"): 3, ("convert_currency", "to"): 3, ("book_table", "restaurant"): 18,
    ("book_table", "date"): 10, ("book_table", "time"): 5, ("schedule_meeting", "title"): 20,
    ("schedule_meeting", "date"): 10, ("send_message", "to"): 12, ("send_message", "text"): 18,
    ("search_flights", "from"): 14, ("search_flights", "to"): 14, ("search_flights", "date"): 10,
}
# JSON Schema keywords a slot language honours; any other constraint is reported once and ignored
HONOURED = {"type", "properties", "required", "enum", "items", "maxLength", "minimum", "maximum", "format",
            "minItems", "maxItems", "description", "title", "name", "default", "additionalProperties", "$schema",
            "examples", "const"}


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # one of TYPES
    enum: tuple = ()  # enum: the allowed JSON values
    optional: bool = False
    budget: int = 0  # slot positions (a quoted slot: raw value characters); 0 = the type's default
    items: Field | None = None  # array: the items' schema
    fields: tuple[Field, ...] = ()  # object: its properties, scaffolded in place
    minimum: float | None = None
    maximum: float | None = None
    format: str | None = None  # string: date, time or date-time
    min_items: int = 0
    max_items: int | None = None

    @property
    def quoted_by_scaffold(self) -> bool:
        """The scaffold writes the quotes: a string, or an enum of strings; the slot holds the escaped text."""
        return self.type == "string" or (self.type == "enum" and all(isinstance(v, str) for v in self.enum))

    @property
    def slot(self) -> int:
        """Positions of the slot: the budget, or the longest value the type can need (room for `null` in
        an optional unquoted slot). An object is no slot: its fields are scaffolded in place."""
        base = self.budget or _default_budget(self)
        return max(base, 4) if self.optional and not self.quoted_by_scaffold else base

    def slot_text(self, value) -> str:
        """What the slot holds for `value` (before [NULL] padding); nothing for an absent quoted value."""
        if value is None and self.quoted_by_scaffold:
            return ""
        text = json_text(value)
        return text[1:-1] if self.quoted_by_scaffold else text


def json_text(value) -> str:
    """A value as the scaffold writes JSON: `, ` and `: ` separators, characters unescaped."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _default_budget(f: Field) -> int:
    if f.type == "enum":
        return max(len(f.slot_text(v)) for v in f.enum)
    if f.type == "string" and f.format in FORMATS:
        return FORMATS[f.format]
    if f.type == "integer" and f.minimum is not None and f.maximum is not None:
        return max(len(str(math.ceil(f.minimum))), len(str(math.floor(f.maximum))))
    if f.type == "array":
        n = min(f.max_items, MAX_LISTED) if f.max_items is not None else max(ARRAY_ITEMS, f.min_items)
        return 2 + n * _json_width(f.items) + 2 * max(n - 1, 0)
    if f.type == "object":
        return _json_width(f)
    return DEFAULT_BUDGET[f.type]


def _json_width(f: Field) -> int:
    """Characters the JSON text of a value of `f` can take (quotes included), for slots that hold one."""
    if f.type == "object":
        inner = [len(json_text(g.name)) + 2 + _json_width(g) for g in f.fields]
        return 2 + sum(inner) + 2 * max(len(inner) - 1, 0)
    width = f.slot + 2 if f.quoted_by_scaffold else f.slot
    return max(width, 4) if f.optional else width


@dataclass(frozen=True)
class Schema:
    tool: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


@lru_cache(maxsize=None)
def builtin(tool: str) -> Schema:
    """A built-in tool's schema, one object per tool (layouts are cached by schema object)."""
    if tool not in TOOLS:
        raise UsageError(f"unknown tool {tool!r}; built-in tools: {', '.join(TOOLS)}")
    return Schema(tool, tuple(Field(a.name, a.type, a.enum, a.optional, BUILTIN_BUDGETS.get((tool, a.name), 0))
                              for a in TOOLS[tool]))


def from_json_schema(path: Path) -> Schema:
    """The one tool of a schema file (see `tools_from_file`); several tools are an error here."""
    tools = tools_from_file(path)
    if len(tools) > 1:
        raise UsageError(f"{path} defines {len(tools)} tools; this needs one")
    return tools[0]


def tools_from_file(path: Path, notes: list[str] | None = None) -> list[Schema]:
    """The tools of a file: a JSON Schema object (its name from `name` or `title`), an OpenAI-style tool
    `{"type": "function", "function": {"name", "parameters"}}`, a `{"name", "parameters"}` function (BFCL's
    form, with its `dict`, `float`, `tuple` and `any` types), or a JSON list of any of these. Constraints a
    slot cannot express are ignored, each named once in `notes`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CdtError(f"schema file not found: {path}") from None
    except OSError as e:
        raise CdtError(f"cannot read schema file {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CdtError(f"schema file {path} is not valid JSON ({e})") from None
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise UsageError(f"schema file {path} holds an empty list of tools")
    tools = [tool_from_dict(item, f"{path}" + (f" tool {i + 1}" if isinstance(doc, list) else ""), notes)
             for i, item in enumerate(items)]
    names = [t.tool for t in tools]
    if len(set(names)) < len(names):
        raise UsageError(f"schema file {path} names a tool twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return tools


def tool_from_dict(doc, where: str, notes: list[str] | None = None) -> Schema:
    """One tool in any of the forms `tools_from_file` reads; `where` names it in errors."""
    if isinstance(doc, dict) and doc.get("type") == "function" and isinstance(doc.get("function"), dict):
        doc = doc["function"]  # OpenAI: {"type": "function", "function": {...}}
    if not isinstance(doc, dict):
        raise UsageError(f"{where} must be a JSON Schema object, a tool or a list of tools")
    if "parameters" in doc:  # a function: {"name", "description", "parameters"}
        name, params = doc.get("name"), doc["parameters"]
    else:
        name, params = doc.get("name") or doc.get("title"), doc
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where} has no tool name: give the schema a \"name\" (or \"title\")")
    if not isinstance(params, dict) or _kind(params) != "object" or not isinstance(params.get("properties", {}), dict):
        raise UsageError(f"{where}: the parameters of {name!r} must be an object schema: "
                         "{\"type\": \"object\", \"properties\": {...}}")
    return Schema(name, _properties(params, f"{where} ({name})", [] if notes is None else notes))


def _kind(prop: dict):
    """The JSON type a property names (BFCL's dict, float and tuple read as object, number and array)."""
    kind = prop.get("type")
    if isinstance(kind, list):  # ["string", "null"]: a nullable value
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else "any"
    return {"dict": "object", "float": "number", "tuple": "array"}.get(kind, kind)


def _properties(schema: dict, where: str, notes: list[str]) -> tuple[Field, ...]:
    props = schema.get("properties") or {}
    required = schema.get("required", list(props))
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise UsageError(f"{where}: required must be a list of property names")
    if unknown := [r for r in required if r not in props]:
        raise UsageError(f"{where}: required names {', '.join(map(repr, unknown))}, which "
                         f"{'is not a property' if len(unknown) == 1 else 'are not properties'}")
    return tuple(_field(name, prop, name not in required, f"{where} property {name!r}", notes)
                 for name, prop in props.items())


def _field(name: str, prop, optional: bool, where: str, notes: list[str]) -> Field:
    if not isinstance(prop, dict):
        raise UsageError(f"{where} must be an object")
    for unsupported in ("$ref", "oneOf", "anyOf", "allOf", "not", "patternProperties"):
        if unsupported in prop:
            raise UsageError(f"{where} uses {unsupported}, which a scaffold cannot lay out; give it a plain type")
    ignored = sorted(set(prop) - HONOURED)
    if ignored:
        notes.append(f"{where}: {', '.join(ignored)} ignored (a slot cannot express it)")
    nullable = isinstance(prop.get("type"), list) and "null" in prop["type"]
    optional = optional or nullable
    if "enum" in prop or "const" in prop:
        values = prop["enum"] if "enum" in prop else [prop["const"]]
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where} needs a non-empty enum")
        return Field(name, "enum", tuple(values), optional)
    kind = _kind(prop)
    if kind is None:
        kind = "any"  # no type: any JSON scalar
    if kind not in TYPES or kind == "enum":
        raise UsageError(f"{where} has type {prop.get('type')!r}; supported: string, integer, number, boolean, "
                         "array, object (dict), any, or an enum")
    budget = 0
    if kind == "string" and prop.get("maxLength") is not None:
        budget = prop["maxLength"]
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise UsageError(f"{where} has maxLength {budget!r}; a slot needs a whole number of characters, at "
                             "least 1")
    fmt = prop.get("format") if kind == "string" else None
    if fmt is not None and fmt not in FORMATS:
        notes.append(f"{where}: format {fmt!r} ignored (a slot expresses {', '.join(FORMATS)})")
        fmt = None
    lo, hi = (_number(prop, k, where) for k in ("minimum", "maximum")) if kind in ("integer", "number") else (None, None)
    if lo is not None and hi is not None and lo > hi:
        raise UsageError(f"{where}: its minimum {lo} is above its maximum {hi}")
    if kind == "array":
        items = prop.get("items", {})
        if isinstance(items, list):  # a tuple's item schemas: their common form is any
            items = {}
        item = _field("item", items, False, f"{where} items", notes)
        lo_n, hi_n = prop.get("minItems", 0), prop.get("maxItems")
        return Field(name, "array", (), optional, items=item, min_items=lo_n if isinstance(lo_n, int) else 0,
                     max_items=hi_n if isinstance(hi_n, int) and not isinstance(hi_n, bool) else None)
    if kind == "object":
        return Field(name, "object", (), optional, fields=_properties(prop, where, notes))
    return Field(name, kind, (), optional, budget, minimum=lo, maximum=hi, format=fmt)


def _number(prop: dict, key: str, where: str):
    v = prop.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise UsageError(f"{where} has {key} {v!r}; it must be a number")
    return v


def with_budgets(schema: Schema, overrides: dict[str, int]) -> Schema:
    """Override slot budgets by field name (`*` for every field); too small for an enum is an error."""
    fields = []
    for f in schema.fields:
        b = overrides.get(f.name, overrides.get("*"))
        if b is None or f.type == "object":  # not overridden; an object's fields have their own slots
            fields.append(f)
            continue
        if b < 1:
            raise UsageError(f"budget for {f.name!r} must be at least 1")
        if f.type == "enum" and b < _default_budget(f):
            longest = max(f.enum, key=lambda v: len(f.slot_text(v)))
            raise UsageError(f"budget {b} for {f.name!r} is too small for its enum value "
                             f"{longest!r} ({_default_budget(f)} characters)")
        fields.append(replace(f, budget=b))
    return Schema(schema.tool, tuple(fields))


def parse_budgets(items: list[str]) -> dict[str, int]:
    """`--budget` items, FIELD=N or N (every field), as {field or "*": N}."""
    out = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            out[name if sep else "*"] = int(value)
        except ValueError:
            raise UsageError(f"--budget expects FIELD=N or N, got {item!r}") from None
    return out


def load(name: str | None = None, path: Path | None = None, budgets: list[str] = (),
         notes: list[str] | None = None) -> list[Schema]:
    """The tools of `--schema NAME` (a built-in tool) or `--schema-file PATH` (one or several), with `--budget`
    applied; `notes` gets a line per schema constraint a slot cannot express."""
    if bool(name) == bool(path):
        raise UsageError("give exactly one of --schema NAME or --schema-file FILE")
    tools = [builtin(name)] if name else tools_from_file(path, notes)
    overrides = parse_budgets(list(budgets))
    unknown = set(overrides) - {f.name for t in tools for f in t.fields} - {"*"}
    if unknown:
        raise UsageError(f"--budget names unknown fields: {', '.join(sorted(unknown))}")
    return [with_budgets(t, overrides) for t in tools]
