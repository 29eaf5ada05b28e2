"""Schema scaffolds: Python writes the JSON structure, the model fills fixed-size value slots.

For a tool `{"name": T, "arguments": {k: v, ...}}` the scaffold writes braces, keys,
commas, the tool name and, for string and enum arguments, the quotes; every value is a
*slot* of `budget` positions. A value shorter than its slot is followed by `[NULL]`,
which decoding drops.

An optional string or enum argument is quoted by the scaffold too; a slot left all
`[NULL]` then means `null` (the request did not mention it), so no generated character
can break the quotes. Optional numbers and booleans hold their JSON text, `null` included.

The same layout is used to train (`cdt train --scaffold`: answers rendered with their
values, slots padded with `[NULL]`) and to generate (slots masked), so the model fills
at inference exactly what it learned to fill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cdt.data.toolcalls import TOOLS
from cdt.errors import CdtError, UsageError
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID, Vocab

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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CdtError(f"schema file {path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("type") != "object" or not isinstance(doc.get("properties"), dict) \
            or not doc["properties"]:
        raise CdtError(f"schema file {path} must be an object schema: {{\"type\": \"object\", \"properties\": {{...}}}}")
    required = doc.get("required", list(doc["properties"]))
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
        budget = prop.get("maxLength", 0) if kind == "string" else 0
        if not isinstance(budget, int) or budget < 0:
            raise CdtError(f"schema file {path}: property {name!r} has an invalid maxLength {budget!r}")
        fields.append(Field(name, kind, enum, name not in required, budget))
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


# the layout


def render(schema: Schema, vocab: Vocab, values: dict | None = None) -> tuple[list[int], list[bool]]:
    """Token ids of the scaffolded call and which positions are slots.

    values=None: every slot is [MASK] (generation). Otherwise each slot holds its value's text
    followed by [NULL] up to the slot size (training and reference rows); a value longer than
    its slot is an error.
    """
    ids: list[int] = []
    slots: list[bool] = []

    def text(s: str) -> None:
        ids.extend(vocab.encode(s))
        slots.extend([False] * len(s))

    text('{"name": ' + json.dumps(schema.tool, ensure_ascii=False) + ', "arguments": {')
    for i, f in enumerate(schema.fields):
        text(("" if i == 0 else ", ") + json.dumps(f.name, ensure_ascii=False) + ": " + ('"' if f.quoted_by_scaffold else ""))
        if values is None:
            ids.extend([MASK_ID] * f.slot)
        else:
            content = f.slot_text(values[f.name])
            if len(content) > f.slot:
                raise CdtError(f"value {content!r} of {f.name!r} does not fit its slot of {f.slot} positions")
            ids.extend(vocab.encode(content) + [NULL_ID] * (f.slot - len(content)))
        slots.extend([True] * f.slot)
        if f.quoted_by_scaffold:
            text('"')
    text("}}")
    return ids, slots


def template(schema: Schema, vocab: Vocab, prompts: list[str], separator: str, block_size: int):
    """(ids, protected) rows: each prompt + separator (protected), then the scaffold with masked slots,
    right-padded with [PAD] to the longest row."""
    body, slots = render(schema, vocab)
    rows = []
    for p in prompts:
        head = vocab.encode(p + separator)
        if len(head) + len(body) > block_size:
            raise CdtError(f"prompt ({len(head)} characters) plus the {schema.tool} scaffold ({len(body)}) exceeds "
                           f"the model's block size {block_size}")
        rows.append((head + body, [True] * len(head) + [not s for s in slots]))
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    protected = torch.ones((len(rows), width), dtype=torch.bool)
    for i, (r, p) in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        protected[i, : len(p)] = torch.tensor(p)
    return ids, protected


def slot_characters(f: Field) -> set[str] | None:
    """The characters a slot may hold (besides [NULL], and never [NULL] first unless the value may be
    absent); None = any but a quote, a backslash or a newline.

    Keeps a generated value from breaking the JSON around it: no stray quote inside a string
    the scaffold quotes, only digits in an integer. (It cannot make `1-2` a number: that is
    left to the model and reported by `parse`.)"""
    if f.type == "enum":
        chars = set("".join(f.enum))
    elif f.type == "integer":
        chars = set("-0123456789")
    elif f.type == "number":
        chars = set("-.0123456789")
    elif f.type == "boolean":
        chars = set("truefals")
    else:
        chars = None
    if f.optional and chars is not None and not f.quoted_by_scaffold:
        chars |= set("nul")
    return chars


def slot_masks(schema: Schema, vocab: Vocab) -> torch.Tensor:
    """(len(body), v) bool: what each position of the rendered scaffold may hold."""
    v = len(vocab)
    rows = []
    for f in schema.fields:
        chars = slot_characters(f)
        if chars is None:
            m = torch.ones(v, dtype=torch.bool)
            banned = {'"', "\\", "\n"}
            for c in banned:
                if vocab.id_of(c) is not None:
                    m[vocab.id_of(c)] = False
        else:
            m = torch.zeros(v, dtype=torch.bool)
            m[[vocab.id_of(c) for c in chars if vocab.id_of(c) is not None]] = True
        m[[MASK_ID, PAD_ID]] = False
        m[NULL_ID] = True
        slot = m.expand(f.slot, v).clone()
        if not (f.optional and f.quoted_by_scaffold):  # only an optional quoted value may be empty (null)
            slot[0, NULL_ID] = False  # an empty number or boolean would leave `"key": ,`
        rows.append(slot)
    body, slots = render(schema, vocab)
    out = torch.ones(len(body), v, dtype=torch.bool)
    out[torch.tensor(slots)] = torch.cat(rows)
    return out


def allowed_rows(schemas: list[Schema], starts: list[int], width: int, vocab: Vocab) -> torch.Tensor:
    """(b, width, v) bool for rows whose scaffold begins at `starts[i]` (everything else unrestricted)."""
    out = torch.ones(len(schemas), width, len(vocab), dtype=torch.bool)
    for i, (schema, start) in enumerate(zip(schemas, starts)):
        m = slot_masks(schema, vocab)
        out[i, start : start + len(m)] = m
    return out


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
