"""Machine-readable output of the CLI: values as people read them, CSV and JSON writers.

Formats (``--format``): ``table`` (Rich, for people), ``json`` (one JSON document on stdout) and
``csv`` (a header and one row per item on stdout). Commands that have more than rows to say
(``plan``: the run summary; ``status``: the verdict; ``explain``: one account) write a JSON
object; ``write_rows`` writes a bare list of objects.

Every CSV the product writes goes through ``csv_cell``, the formula guard OWASP recommends
against CSV injection (https://owasp.org/www-community/attacks/CSV_Injection): a text cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab, a carriage return or a NUL (OWASP ASVS 1.2.10
lists it too) is prefixed with ``'`` so a spreadsheet shows it as text and never evaluates it.
Numbers stay numbers: an ``int`` or ``float`` value, or a text that is a plain decimal number
(``-3``, ``+2.5``, ``1e3``), is written unchanged, because a spreadsheet reads it as that number
and nothing else; a negative score change must stay a number a spreadsheet can sum.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO


class OutputFormat(StrEnum):
    """What ``--format`` accepts."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def iso(value: datetime | date) -> str:
    """A datetime as ISO text in UTC with ``Z`` (``2026-11-22T10:00:00Z``); a date as ``2026-11-22``."""
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat().replace("+00:00", "Z")
    return value.isoformat()


def plain_number(value: float | int | Decimal, decimals: int | None = None) -> int | float:
    """A number as a person writes it: ``85.0`` -> ``85``; ``decimals`` rounds the others
    (``plain_number(3.3333, 2)`` -> ``3.33``). ``None`` keeps every digit: a CRM value is shown
    as stored."""
    if isinstance(value, bool | int):
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        return number
    if decimals is not None:
        number = round(number, decimals)
    return int(number) if number.is_integer() else number


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data a person reads without surprise.

    Datetimes and dates become ISO text, whole floats integers (other numbers keep their
    digits), tuples and sets lists; mappings
    and lists are converted item by item. Anything else unknown becomes its text.
    """
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int | float | Decimal):
        return plain_number(value)
    if isinstance(value, datetime | date):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((plain(item) for item in value), key=str)
    return str(value)


def text(value: Any, empty: str = "") -> str:
    """``value`` as one line of text for a person or a CSV cell: never a Python repr.

    ``None`` is ``empty``; booleans are ``true``/``false``; lists are joined with ``; ``;
    mappings are compact JSON.
    """
    value = plain(value)
    if value is None:
        return empty
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "; ".join(text(item) for item in value if item is not None)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return str(value)


def is_plain_number(cell: str) -> bool:
    """True for text a spreadsheet reads as a number only (``-3``, ``2.5``, ``1e3``)."""
    return _PLAIN_NUMBER.fullmatch(cell) is not None


def csv_cell(value: Any) -> str:
    """One CSV cell, guarded against formula injection (see the module docstring)."""
    cell = text(value)
    if cell.startswith(FORMULA_STARTS) and not is_plain_number(cell):
        return "'" + cell
    return cell


def csv_row(values: Iterable[Any]) -> list[str]:
    """A row of guarded CSV cells."""
    return [csv_cell(value) for value in values]


def new_csv_writer(out: TextIO, delimiter: str = ",") -> Any:
    """A ``csv.writer`` for ``out`` (RFC 4180 quoting, ``\\r\\n`` line ends)."""
    return csv.writer(out, delimiter=delimiter)


def write_rows(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: OutputFormat | str,
    out: TextIO,
    *,
    delimiter: str = ",",
) -> int:
    """Write ``rows`` (only ``columns``, in that order) as CSV or as a JSON list of objects.

    CSV has a header row and every cell guarded; JSON is one array with one object per line, so
    a large list streams. Returns how many rows were written.
    """
    written = 0
    if OutputFormat(fmt) is OutputFormat.CSV:
        writer = new_csv_writer(out, delimiter)
        writer.writerow(csv_row(columns))
        for row in rows:
            writer.writerow(csv_row(row.get(column) for column in columns))
            written += 1
        return written
    if OutputFormat(fmt) is not OutputFormat.JSON:
        raise ValueError(f"write_rows writes csv or json, not {fmt}")
    out.write("[")
    for row in rows:
        item = {column: plain(row.get(column)) for column in columns}
        out.write(("," if written else "") + "\n  " + json.dumps(item, ensure_ascii=False))
        written += 1
    out.write("\n]\n" if written else "]\n")
    return written


def write_json(document: Any, out: TextIO) -> None:
    """Write one JSON document (converted with ``plain``), indented, with a final newline."""
    json.dump(plain(document), out, indent=2, ensure_ascii=False)
    out.write("\n")
