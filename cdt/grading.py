"""Grading toolcalls answers: where each argument value sits in a row, and how a generated row scores.

Training reads `value_spans` (value accuracy), `cdt eval` and `cdt calibrate` read `grade`;
a scaffolded answer is read as the scaffold reads it (an empty optional slot is null).
"""

from __future__ import annotations

import json

from cdt.data import SEPARATOR
from cdt.data.toolcalls import AnswerCheck, ToolCall, check_answer


def value_spans(record: ToolCall, vocab, scaffold: bool = False) -> tuple[list[int], list[tuple[int, int]]]:
    """A record's row (request + separator + answer) and the [start, end) of each argument value:
    its JSON text in the plain layout, its whole slot ([NULL] padding included) in the scaffold layout."""
    if scaffold:
        from cdt.scaffold.layout import record_row

        ids, slots = record_row(record, vocab)
        starts = [i for i, s in enumerate(slots) if s and (i == 0 or not slots[i - 1])]
        ends = [i + 1 for i, s in enumerate(slots) if s and (i + 1 == len(slots) or not slots[i + 1])]
        return ids, list(zip(starts, ends))
    text, cuts = record.prompt + SEPARATOR + record.answer, []
    for key, value in record.arguments.items():
        val = json.dumps(value, ensure_ascii=False)
        start = len(record.prompt) + 1 + record.answer.index(f'"{key}": {val}') + len(f'"{key}": ')
        cuts.append((start, start + len(val)))
    # the text between values and each value encode apart, so a value is whole tokens under any tokenizer
    # (one per character: the same ids as encoding the row at once)
    ids, spans, at = [], [], 0
    for start, end in sorted(cuts):
        ids += vocab.encode(text[at:start])
        value = vocab.encode(text[start:end])
        spans.append((len(ids), len(ids) + len(value)))
        ids += value
        at = end
    return ids + vocab.encode(text[at:]), spans


def answer_text(vocab, row) -> str:
    """The answer part of a generated toolcalls row (after the request separator)."""
    return vocab.decode(row).split(SEPARATOR, 1)[-1]


def grade(vocab, record: ToolCall, row, scaffold: bool = False) -> AnswerCheck:
    """Field-by-field check of a generated row's answer against its record."""
    text = answer_text(vocab, row)
    if scaffold:
        from cdt.scaffold import parse
        from cdt.scaffold.layout import record_schema

        call = parse(record_schema(record), text).call
        text = json.dumps(call, ensure_ascii=False) if call is not None else text
    return check_answer(record, text)
