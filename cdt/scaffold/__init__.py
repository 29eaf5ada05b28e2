"""Schema scaffolds: Python writes the JSON structure of a call, the model fills its value slots.

    schema.py    fields, types and budgets; schemas from built-in tools or JSON Schema files; reading a call
    layout.py    the slot layout (to train on and to generate into) and what each slot may hold
    sample.py    `cdt sample --schema`: fill the slots after each request
    evaluate.py  `cdt eval --scaffold`: fill held-out answers' slots and grade every field
"""

from cdt.scaffold.layout import allowed_rows, record_row, record_rows, render, slot_characters, slot_masks, template
from cdt.scaffold.schema import Field, Parsed, Schema, builtin, from_json_schema, load, parse, with_budgets

__all__ = ["Field", "Parsed", "Schema", "allowed_rows", "builtin", "from_json_schema", "load", "parse",
           "record_row", "record_rows", "render", "slot_characters", "slot_masks", "template", "with_budgets"]
