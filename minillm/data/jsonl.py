"""Reading JSON-lines files of records (the SFT and preference sets), checked line by line.

    read_jsonl("data/sft/train.jsonl", SFTExample)   # -> [SFTExample(...), ...]

Each non-blank line must be a JSON object whose keys are exactly the dataclass's fields, each
of the field's type (an int is accepted where a float is asked for; a bool is never a number).
Blank lines are skipped. Anything else is a `ValueError` of one line that names the file, the
line number (counting every line, as an editor does), the field, and the fix:

    data/sft/train.jsonl:12: field 'heldout' is a str ('no'); it must be a bool (true or false)
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

__all__ = ["read_jsonl"]

T = TypeVar("T")

# the JSON types each annotation accepts, and how to write one
_TYPES = {"str": ((str,), 'a string ("...")'), "bool": ((bool,), "a bool (true or false)"),
          "int": ((int,), "a whole number"), "float": ((int, float), "a number")}


def _check(cls, record, where: str):
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a {type(record).__name__}, not a JSON object; write one "
                         f"object per line with the fields {[f.name for f in fields(cls)]}")
    names = [f.name for f in fields(cls)]
    missing = [n for n in names if n not in record]
    if missing:
        raise ValueError(f"{where}: field {missing[0]!r} is missing; every line needs "
                         f"{', '.join(names)}")
    extra = [k for k in record if k not in names]
    if extra:
        raise ValueError(f"{where}: field {extra[0]!r} is unknown; the fields are "
                         f"{', '.join(names)} (remove or rename it)")
    for f in fields(cls):
        value = record[f.name]
        kinds, what = _TYPES[str(f.type)]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ValueError(f"{where}: field {f.name!r} is a {type(value).__name__} ({shown}); "
                             f"it must be {what}")
    return cls(**record)


def read_jsonl(path: str | Path, cls: type[T]) -> list[T]:
    """The records of a JSON-lines file as instances of the dataclass `cls`.

    Args:
        path: the file; one JSON object per line, blank lines skipped.
        cls: a dataclass whose fields are str, int, float or bool.

    Returns:
        One `cls` per non-blank line, in order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not JSON, not an object, or has a missing, unknown or
            wrongly typed field: names the file, line, field and fix.
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: byte {e.start} is not UTF-8; save the file as "
                             "UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); fix "
                             "the line or remove it") from None
        records.append(_check(cls, record, where))
    return records
