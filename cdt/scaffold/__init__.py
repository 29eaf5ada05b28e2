"""Schema scaffolds: Python writes the JSON structure of a call, the model fills its value slots.

    schema.py     fields, types and budgets; tools from built-ins, JSON Schema, OpenAI or BFCL files; validation
    languages.py  each type's slot language (a JSON string's text, an integer, an array, ...)
    automaton.py  those languages as automata, and the decoder that keeps a slot inside its language
    layout.py     the slot layout (to train on and to generate into) and the constraint on each slot
    validate.py   reading a filled call: parse, check every field, the JSON Schema it satisfies
    sample.py    `cdt sample --schema`: fill the slots after each request
    evaluate.py  `cdt eval --scaffold`: fill held-out answers' slots and grade every field
"""

from cdt.scaffold.layout import SlotConstraint, record_row, record_rows, render, slot_fields, template
from cdt.scaffold.schema import Field, Schema, builtin, from_json_schema, load, tools_from_file, with_budgets
from cdt.scaffold.validate import Parsed, json_schema, parse

__all__ = ["Field", "Parsed", "Schema", "SlotConstraint", "builtin", "from_json_schema", "json_schema", "load",
           "parse", "record_row", "record_rows", "render", "slot_fields", "template", "tools_from_file",
           "with_budgets"]
