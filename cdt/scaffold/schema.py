"""What a scaffold is made of: a tool's fields with their JSON types and slot budgets, where a
schema comes from (a built-in toolcalls tool or a JSON Schema file), and how a filled call is read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cdt.data.toolcalls import TOOLS
from cdt.errors import CdtError, UsageError

TYPES = ("string", "integer", "number", "boolean", "enum")
DEFAULT_BUDGET = {"string": 16, "integer": 4, "number": 8, "boolean": 5}
# built-in tools: raw characters of the longest value in the corpus, plus slack
BUILTIN_BUDGETS = {
    ("get_weather", "city"): 14, ("set_alarm", "time"): 5, ("set_alarm", "label"): 14,
    ("convert_currency", "from"): 3, ("convert_currency", "to"): 3, ("book_table", "restaurant"): 18,
    ("book_table", "date"): 10, ("book_table", "time"): 5, ("schedule_meeting", "title"): 20,
    ("schedule_meeting", "date"): 10, ("send_message", "to"): 12, ("send_message", "text"): 18,
    ("search_flights", "from"): 14, ("search_flights", "to"): 14, ("search_flights", "date"): 10,
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # string | integer | number | boolean | enum
    enum: tuple[str, ...] = ()
    optional: bool = False
    budget: int = 0  # raw value characters; 0 = the type's default

    @property
    def quoted_by_scaffold(self) -> bool:
        return self.type in ("string", "enum")

    @property
    def slot(self) -> int:
        """Positions of the slot: the value budget (room for `null` in an optional unquoted slot)."""
        base = self.budget or (max(map(len, self.enum)) if self.type == "enum" else DEFAULT_BUDGET[self.type])
        return max(base, 4) if self.optional and not self.quoted_by_scaffold else base

    def slot_text(self, value) -> str:
        """What the slot holds for `value` (before [NULL] padding); nothing for an absent quoted value."""
        if value is None and self.quoted_by_scaffold:
            return ""
        text = json.dumps(value, ensure_ascii=False)
        return text[1:-1] if self.quoted_by_scaffold else text


@dataclass(frozen=True)
class Schema:
    tool: str
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def builtin(tool: str) -> Schema:
    if tool not in TOOLS:
        raise UsageError(f"unknown tool {tool!r}; built-in tools: {', '.join(TOOLS)}")
    return Schema(tool, tuple(Field(a.name, a.type, a.enum, a.optional, BUILTIN_BUDGETS.get((tool, a.name), 0))
                              for a in TOOLS[tool]))


def from_json_schema(path: Path) -> Schema:
    """An object JSON Schema: `properties` with `type` (string/integer/number/boolean) or `enum`,
    `required`, optional `maxLength` (a string's budget); the tool name from `title` or the file name."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CdtError(f"schema file not found: {path}") from None
    except OSError as e:
        raise CdtError(f"cannot read schema file {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CdtError(f"schema file {path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("type") != "object" or not isinstance(doc.get("properties"), dict) \
            or not doc["properties"]:
        raise CdtError(f"schema file {path} must be an object schema: {{\"type\": \"object\", \"properties\": {{...}}}}")
    required = doc.get("required", list(doc["properties"]))
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise CdtError(f"schema file {path}: required must be a list of property names")
    if unknown := [r for r in required if r not in doc["properties"]]:
        raise CdtError(f"schema file {path}: required names {', '.join(map(repr, unknown))}, which "
                       f"{'is not a property' if len(unknown) == 1 else 'are not properties'}")
    fields = []
    for name, prop in doc["properties"].items():
        if not isinstance(prop, dict):
            raise CdtError(f"schema file {path}: property {name!r} must be an object")
        if "enum" in prop:
            values = prop["enum"]
            if not values or not all(isinstance(v, str) for v in values):
                raise CdtError(f"schema file {path}: property {name!r} needs a non-empty enum of strings")
            kind, enum = "enum", tuple(values)
        else:
            kind, enum = prop.get("type"), ()
            if kind not in DEFAULT_BUDGET:
                raise CdtError(f"schema file {path}: property {name!r} has type {kind!r}; "
                               f"supported: string, integer, number, boolean, or an enum")
        budget = prop.get("maxLength") if kind == "string" else None
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise CdtError(f"schema file {path}: property {name!r} has maxLength {budget!r}; a slot needs a whole "
                           "number of characters, at least 1")
        fields.append(Field(name, kind, enum, name not in required, budget or 0))
    return Schema(str(doc.get("title") or Path(path).stem), tuple(fields))


def with_budgets(schema: Schema, overrides: dict[str, int]) -> Schema:
    """Override slot budgets by field name (`*` for every field); too small for an enum is an error."""
    fields = []
    for f in schema.fields:
        b = overrides.get(f.name, overrides.get("*"))
        if b is None:  # not overridden
            fields.append(f)
            continue
        if b < 1:
            raise UsageError(f"budget for {f.name!r} must be at least 1")
        if f.type == "enum" and b < max(map(len, f.enum)):
            raise UsageError(f"budget {b} for {f.name!r} is too small for its enum value "
                             f"{max(f.enum, key=len)!r} ({max(map(len, f.enum))} characters)")
        fields.append(Field(f.name, f.type, f.enum, f.optional, b))
    unknown = set(overrides) - {f.name for f in schema.fields} - {"*"}
    if unknown:
        raise UsageError(f"--budget names unknown fields: {', '.join(sorted(unknown))}")
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


def load(name: str | None = None, path: Path | None = None, budgets: list[str] = ()) -> Schema:
    """The schema of `--schema NAME` (a built-in tool) or `--schema-file PATH`, with `--budget` applied."""
    if bool(name) == bool(path):
        raise UsageError("give exactly one of --schema NAME or --schema-file FILE")
    return with_budgets(builtin(name) if name else from_json_schema(path), parse_budgets(list(budgets)))


# reading the result


@dataclass
class Parsed:
    call: dict | None  # the parsed JSON, when it parses
    errors: list[str]  # one line per problem: which field, what was generated

    @property
    def valid(self) -> bool:
        return self.call is not None and not self.errors


def _type_ok(f: Field, v) -> bool:
    if v is None:
        return f.optional
    return {"string": lambda: isinstance(v, str) and v != "", "integer": lambda: type(v) is int,
            "number": lambda: type(v) in (int, float), "boolean": lambda: type(v) is bool,
            "enum": lambda: v in f.enum}[f.type]()


def parse(schema: Schema, text: str) -> Parsed:
    """json.loads the generated call and check every field's type, enum and presence; never raises.
    An empty optional string/enum slot reads as null."""
    try:
        call = json.loads(text)
    except json.JSONDecodeError as e:
        return Parsed(None, [f"not valid JSON ({e.msg} at character {e.pos}): {text!r}"])
    args = call.get("arguments") if isinstance(call, dict) else None
    if not isinstance(args, dict):
        return Parsed(None, [f"no arguments object in {text!r}"])
    errors = []
    for f in schema.fields:
        if f.name not in args:
            errors.append(f"field {f.name!r}: missing")
            continue
        v = args[f.name]
        if v == "" and f.optional and f.quoted_by_scaffold:  # an empty optional slot means null
            v = args[f.name] = None
        if not _type_ok(f, v):
            want = f"one of {', '.join(f.enum)}" if f.type == "enum" else f"a {f.type}"
            want += " or null" if f.optional else ""
            errors.append(f"field {f.name!r}: generated {json.dumps(v, ensure_ascii=False)}, expected {want}")
    return Parsed(call, errors)
