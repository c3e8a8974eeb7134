"""Conversion labels: which accounts bought, and when, from a warehouse table or a CSV file.

``read_labels`` returns one ``Label`` per registrable domain. Domains are normalised with
``pls_sync.domains`` (``eng.acme.co.uk`` and ``WWW.ACME.CO.UK`` are ``acme.co.uk``); free-mail,
disposable and other hosts that name no company are dropped and counted by reason, like rows that
cannot be read. Several rows of one domain make one label: converted when any row says so, at the
earliest conversion time.

A row says "converted" through its ``converted`` column (1/0, true/false, yes/no) when the
settings name one; otherwise through a non-empty ``converted_at``. Set a column to ``None`` when
the source has none.

Warehouse: one SELECT of the configured columns (identifiers quoted by SQLAlchemy), filtered in
the query to converting rows (every account absent from the labels did not convert). File: a CSV
with a header row; every readable row is kept, explicit non-converters included.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pls_sync.config import LabelSettings
from pls_sync.domains import classify_host
from pls_sync.errors import ConfigError, ConfigIssue, WarehouseError

if TYPE_CHECKING:  # SQLAlchemy is imported only when a warehouse is read
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.elements import ColumnElement

    from connectors.warehouse import SqlUsageSource, TableColumns

__all__ = [
    "SKIP_BAD_CONVERTED",
    "SKIP_BAD_DATE",
    "SKIP_NO_DOMAIN",
    "Label",
    "LabelRead",
    "LabelSettings",
    "read_labels",
]

SKIP_NO_DOMAIN = "no_domain"
SKIP_BAD_CONVERTED = "bad_converted"
SKIP_BAD_DATE = "bad_date"

_TRUE = frozenset({"1", "true", "t", "yes", "y"})
_FALSE = frozenset({"0", "false", "f", "no", "n"})
_SETTINGS_KEY = "labels"


@dataclass(frozen=True, slots=True)
class Label:
    """One account's outcome: its registrable domain, whether it bought, and when (if known)."""

    domain: str
    converted: bool
    converted_at: datetime | None


@dataclass(frozen=True, slots=True)
class LabelRead:
    """The labels read, sorted by domain, and the rows left out, counted by reason.

    Reasons: ``no_domain`` (empty or not a host), ``bad_converted`` (not a 0/1 value),
    ``bad_date`` (not a date or time), and the ``pls_sync.domains`` reasons for hosts that
    name no company (``free_mail``, ``disposable``, ``platform_host``, ``shared_hosting``).
    """

    labels: list[Label]
    skipped: dict[str, int] = field(default_factory=dict)
    rows: int = 0

    @property
    def converters(self) -> int:
        """How many labelled domains converted."""
        return sum(label.converted for label in self.labels)


class _BadValue(Exception):
    """A cell that cannot be read; its argument is the skip reason."""


def read_labels(settings: LabelSettings, *, engine_or_url: Engine | str | None = None) -> LabelRead:
    """Read the conversion labels ``settings`` point at.

    ``engine_or_url`` is the warehouse (an engine or a SQLAlchemy URL) for the ``warehouse``
    source; the ``file`` source ignores it. Raises ``ConfigError`` for settings that cannot work
    (no table, no path, no converted column) and for a missing file or CSV column,
    ``WarehouseError`` (one line, no password) for a warehouse, table or column that cannot be
    read.
    """
    _check_settings(settings)
    if settings.source == "file":
        assert settings.path is not None
        return _merge(_file_rows(settings, settings.path))
    if engine_or_url is None:
        raise WarehouseError("labels.source is warehouse but no warehouse URL was given")
    return _merge(_warehouse_rows(settings, engine_or_url))


def _issue(settings: LabelSettings, key: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(settings.config_file, None, f"{_SETTINGS_KEY}.{key}", message)])


def _check_settings(settings: LabelSettings) -> None:
    if settings.source in ("salesforce", "hubspot"):
        # Read through the destination's client: connectors.crm_labels.read_crm_labels.
        raise _issue(
            settings,
            "source",
            f"{settings.source} labels are read from the CRM, not from a table or a file",
        )
    if settings.source not in ("warehouse", "file"):
        raise _issue(settings, "source", f"must be warehouse or file, not {settings.source!r}")
    if settings.source == "warehouse" and not (settings.table or "").strip():
        raise _issue(settings, "table", "the warehouse source needs the table holding the labels")
    if settings.source == "file" and settings.path is None:
        raise _issue(settings, "path", "the file source needs the path of a CSV file")
    if not settings.domain_column:
        raise _issue(settings, "domain_column", "name the column holding the account's domain")
    if not settings.converted_column and not settings.converted_at_column:
        raise _issue(
            settings,
            "converted_column",
            "name a converted column (0/1) or a converted_at column (or both)",
        )


# -- rows to labels ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """One source row, as read: either a skip reason or its raw values."""

    domain: Any = None
    converted: Any = None
    converted_at: Any = None
    skip: str | None = None


def _merge(rows: Iterable[_Row]) -> LabelRead:
    """Rows to one label per registrable domain, counting the rows left out."""
    skipped: Counter[str] = Counter()
    merged: dict[str, Label] = {}
    count = 0
    for row in rows:
        count += 1
        try:
            if row.skip is not None:
                raise _BadValue(row.skip)
            label = _label(row)
        except _BadValue as bad:
            skipped[str(bad)] += 1
            continue
        merged[label.domain] = _combine(merged.get(label.domain), label)
    return LabelRead(
        labels=[merged[domain] for domain in sorted(merged)], skipped=dict(skipped), rows=count
    )


def _label(row: _Row) -> Label:
    text = row.domain.strip() if isinstance(row.domain, str) else ""
    if not text:
        raise _BadValue(SKIP_NO_DOMAIN)
    verdict = classify_host(text.rpartition("@")[2] if "@" in text else text)
    if verdict.domain is None:
        raise _BadValue(SKIP_NO_DOMAIN)
    if verdict.reason is not None:
        raise _BadValue(verdict.reason)
    converted_at = _timestamp(row.converted_at)
    converted = _flag(row.converted) if row.converted is not None else converted_at is not None
    return Label(verdict.domain, converted, converted_at if converted else None)


def _combine(old: Label | None, new: Label) -> Label:
    if old is None:
        return new
    times = [t for t in (old.converted_at, new.converted_at) if t is not None]
    return Label(new.domain, old.converted or new.converted, min(times) if times else None)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value in (0, 1):
            return bool(value)
        raise _BadValue(SKIP_BAD_CONVERTED)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE or not text:
        return False
    raise _BadValue(SKIP_BAD_CONVERTED)


def _timestamp(value: Any) -> datetime | None:
    """A UTC datetime from a warehouse value or CSV text; naive times are UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise _BadValue(SKIP_BAD_DATE) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# -- file --------------------------------------------------------------------------------------


def _file_rows(settings: LabelSettings, path: Path) -> Iterator[_Row]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = _file_columns(settings, path, reader.fieldnames or [])
            for record in reader:
                yield _Row(*(record.get(c) if c else None for c in columns))
    except FileNotFoundError:
        raise _issue(settings, "path", f"label file not found: {path}") from None
    except IsADirectoryError:
        raise _issue(settings, "path", f"{path} is a directory, not a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _issue(settings, "path", f"cannot read the label file {path}: {exc}") from None


def _file_columns(
    settings: LabelSettings, path: Path, header: Sequence[str]
) -> tuple[str, str | None, str | None]:
    """The header names of (domain, converted, converted_at), matched without case."""
    by_lower = {name.strip().lower(): name for name in header}
    found: list[str | None] = []
    for key, wanted in _wanted_columns(settings):
        if wanted is None:
            found.append(None)
        elif wanted.lower() in by_lower:
            found.append(by_lower[wanted.lower()])
        else:
            have = ", ".join(header) or "no header"
            raise _issue(settings, key, f"{path} has no column {wanted!r} (it has: {have})")
    domain, converted, converted_at = found
    assert domain is not None
    return domain, converted, converted_at


def _wanted_columns(settings: LabelSettings) -> list[tuple[str, str | None]]:
    return [
        ("domain_column", settings.domain_column),
        ("converted_column", settings.converted_column),
        ("converted_at_column", settings.converted_at_column),
    ]


# -- warehouse ---------------------------------------------------------------------------------


def _warehouse_rows(settings: LabelSettings, engine_or_url: Engine | str) -> list[_Row]:
    from connectors.warehouse import SqlUsageSource

    schema, _, table = (settings.table or "").strip().rpartition(".")
    if isinstance(engine_or_url, str):
        source = SqlUsageSource(engine_or_url, taxonomy={}, schema=schema or None)
    else:
        source = SqlUsageSource("", taxonomy={}, schema=schema or None, engine=engine_or_url)
    with _reading(source) as conn:
        reflected = source.reflect(conn, table)
        if reflected is None:
            where = f" in schema {schema}" if schema else ""
            raise WarehouseError(
                f"label table {table!r} not found{where} in the warehouse {source.describe()}: "
                "check labels.table"
            )
        statement = _select(settings, reflected, schema or None)
        return [_Row(*row) for row in conn.execute(statement)]


@contextmanager
def _reading(source: SqlUsageSource) -> Iterator[Connection]:
    """A read-only connection; any driver failure leaves as one redacted ``WarehouseError``."""
    from sqlalchemy.exc import SQLAlchemyError

    engine, owned = source.connect_engine()
    try:
        try:
            with engine.connect() as conn:
                source.begin_read(conn, owned)
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            original = getattr(exc, "orig", None) or exc
            lines = str(original).strip().splitlines()
            detail = source.redact_secrets(lines[0] if lines else type(original).__name__)
            raise WarehouseError(
                f"cannot read labels from the warehouse {source.describe()}: {detail}"
            ) from None
    finally:
        if owned:
            engine.dispose()


def _select(settings: LabelSettings, reflected: TableColumns, schema: str | None) -> sa.Select[Any]:
    """SELECT domain, converted, converted_at of the converting rows, by quoted identifiers."""
    import sqlalchemy as sa

    wanted = _wanted_columns(settings)
    for key, name in wanted:
        if name is not None and name.lower() not in reflected.names:
            have = ", ".join(reflected.names.values())
            raise WarehouseError(
                f"label table {reflected.table!r} has no column {name!r} (it has: {have}): "
                f"check labels.{key}"
            )
    present = [name.lower() for _, name in wanted if name is not None]
    table = reflected.table_clause(schema, present)

    def column(name: str | None) -> ColumnElement[Any] | None:
        return None if name is None else table.c[reflected.names[name.lower()]]

    domain, converted, converted_at = (column(name) for _, name in wanted)
    assert domain is not None
    says_converted: list[ColumnElement[bool]] = []
    if converted is not None:
        says_converted.append(_truthy(converted))
    if converted_at is not None:
        says_converted.append(converted_at.is_not(None))
    return sa.select(
        domain.label("domain"),
        (sa.null() if converted is None else converted).label("converted"),
        (sa.null() if converted_at is None else converted_at).label("converted_at"),
    ).where(domain.is_not(None), sa.or_(*says_converted))


def _truthy(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """``converted`` as a condition, whatever type the warehouse stores it as."""
    import sqlalchemy as sa

    type_ = column.type
    if isinstance(type_, sa.Boolean):
        return column == sa.true()
    if isinstance(type_, sa.Integer | sa.Numeric | sa.Float):
        return column != 0
    return sa.func.lower(sa.cast(column, sa.String)).in_(sorted(_TRUE))
