"""The paper's own numbers (Tables 1-6), read from ``paper_numbers.yaml`` beside this file.

The YAML is the one transcription of the paper; ``tests/test_tables.py`` checks it against the
paper text. Top-level ``tableN -> row key -> column key -> number`` (CONTRACT section 7) and one
``meta`` key with titles, units, printed labels and per-column metric notes.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from vcr.errors import ConfigError
from vcr.names import TABLES

PAPER_NUMBERS_PATH = Path(__file__).with_name("paper_numbers.yaml")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    missing = [t for t in (*TABLES, "meta") if t not in data]
    if missing:
        raise ConfigError(f"{path}: paper numbers miss top-level key(s) {missing}")
    return data


def load_paper_numbers(path: str | Path | None = None) -> dict:
    """The whole transcription (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_load(str(path or PAPER_NUMBERS_PATH)))


def table_meta(table: str, numbers: dict | None = None) -> dict:
    """``meta.tables[table]`` (title, unit, printed labels, column order)."""
    numbers = numbers if numbers is not None else _load(str(PAPER_NUMBERS_PATH))
    try:
        return numbers["meta"]["tables"][table]
    except KeyError:
        raise ConfigError(f"table={table!r}: not a paper table; expected one of {TABLES}") from None


def column_meta(column: str, numbers: dict | None = None) -> dict:
    """``meta.columns[column]`` (printed label, metric, note); {} for a column the paper lacks."""
    numbers = numbers if numbers is not None else _load(str(PAPER_NUMBERS_PATH))
    return numbers["meta"]["columns"].get(column, {})


def paper_value(table: str, row: str, column: str, numbers: dict | None = None) -> float | None:
    """The paper's number for one cell, or None where the paper has no such cell."""
    numbers = numbers if numbers is not None else _load(str(PAPER_NUMBERS_PATH))
    v = numbers.get(table, {}).get(row, {}).get(column)
    return None if v is None else float(v)
