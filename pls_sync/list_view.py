"""``pls-sync lists``: the whole ABM, unmatched and stale lists a run keeps, ranked and laid out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from pls_sync.output import is_plain_number, text


class ListName(StrEnum):
    """The full lists a run keeps in the state store."""

    ABM = "abm"
    UNMATCHED = "unmatched"
    STALE = "stale"


LIST_COLUMNS: dict[ListName, tuple[str, ...]] = {
    ListName.ABM: (
        "domain",
        "account",
        "score",
        "tier",
        "active_users",
        "users",
        "motion",
        "signals",
    ),
    ListName.UNMATCHED: (
        "destination",
        "domain",
        "account",
        "score",
        "tier",
        "users",
        "active_users",
    ),
    ListName.STALE: (
        "destination",
        "domain",
        "record_id",
        "qualified_since",
        "last_activity",
        "score",
        "tier",
    ),
}


def _score_order(row: Mapping[str, Any]) -> tuple[float, str]:
    try:
        score = float(row.get("score") or 0)
    except (TypeError, ValueError):
        score = 0.0
    return -score, str(row.get("domain") or "")


def ranked_rows(
    rows: Iterable[Mapping[str, Any]], destinations: tuple[str, ...] | None
) -> list[Mapping[str, Any]]:
    """Rows of the wanted destinations, highest score first, then by domain."""
    kept = [r for r in rows if destinations is None or r.get("destination") in destinations]
    return sorted(kept, key=_score_order)


def list_lines(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[str]:
    """A list as aligned plain text for people: the title, a header, a line per row.

    Plain text rather than a Rich table: a list can hold 50,000 rows (a Rich table takes
    seconds per thousand), and a line per row reads well in ``less`` and ``grep``. The
    ``account`` column is left out when it only repeats the domain.
    """
    shown = [
        c
        for c in columns
        if c != "account" or any(r.get("account") != r.get("domain") for r in rows)
    ]
    cells = [[text(row.get(name)) for name in shown] for row in rows]
    numeric = [
        all(is_plain_number(line[i]) or not line[i] for line in cells) for i in range(len(shown))
    ]
    widths = [max([len(name), *(len(line[i]) for line in cells)]) for i, name in enumerate(shown)]

    def line_of(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return [title, line_of(shown), *(line_of(values) for values in cells)]
