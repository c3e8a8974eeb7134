"""The warehouse reader: usage aggregates per product account, computed in the warehouse.

``SqlUsageSource`` implements ``pls_sync.ports.UsageSource`` over any SQLAlchemy URL (DuckDB,
SQLite, Postgres; Snowflake, BigQuery... through their dialects).

The built-in model reads ``users`` and ``events`` (DESIGN.md section 2) with one query:

1. events of the last 63 days (names under ``ignored`` left out) are pre-aggregated per user with
   conditional aggregates over the time windows;
2. they are joined to users and grouped by email host (and workspace at the workspace level).

Python then sees one row per host (per host and workspace at the workspace level), not per
event: it classifies each host once (free mail, disposable and junk hosts are skipped and counted)
and merges hosts sharing a registrable domain (``eng.acme.co.uk`` + ``acme.co.uk``), or a
workspace's company hosts: counts sum, feature flags OR, ``first_seen`` is the minimum. An
account's ``first_seen`` is its first sign-up, or its users' first event in the window when that
is earlier (user records re-created recently do not make an established team young).
Distinct-feature counts do not sum across hosts, hence one 0/1 column per configured feature.
A skipped host's users and events count toward no account, at either level: the gmail.com
members of a company's workspace are skipped as ``free_mail`` and the workspace is scored on its
company members. Since the query already groups by host, leaving a host out is exact (its users,
events and feature bits are its row alone) and costs no second pass.

Time windows are computed in Python from ``as_of`` and bound as parameters, half-open
``[as_of - N days, as_of)``; event names are bound values, never SQL text. Timestamps without a
time zone are taken as UTC. The query runs read-only where the dialect allows and streams its
rows in chunks.

A custom model is a SQL file returning one row per account: ``domain`` (plus ``workspace_id`` at
the workspace level), numeric metric columns and optionally ``first_seen``. It may use the bind
parameters ``:as_of``, ``:since_7d``, ``:since_14d``, ``:since_28d``, ``:since_56d`` and
``:since_63d`` (naive UTC timestamps). A NULL metric is unknown and stays ``None``, never 0 (a
condition ``< 1`` must not fire on missing data), and so is a sum of rows of one account with an
unknown part; a value that is not a finite number (text, NaN, infinity) skips the row as
``bad_metric``.

Email hosts: SQL cuts the host out of each email the same way on every dialect
(``connectors.sql_constructs.email_host``); Python lower-cases it, so the result never depends on
a dialect's ``lower()``.

Dropped events: the built-in read also counts the events it could not use
(``UsageReadStats.dropped_events``): ``no_time`` (no usable ``occurred_at``, anywhere in time),
``future`` (at or after ``as_of``), and within the 63-day scoring window ``no_user`` (NULL
``user_id``), ``no_name`` (NULL or empty ``event_name``) and ``unknown_user`` (orphans: no
``users`` row read as of ``as_of`` for the ``user_id``, or for the ``user_id``/``workspace_id``
pair at the workspace level). Names under ``ignored`` are never counted as dropped. One extra
pass over the events, without a join, counts the first four and the in-window events the
pre-aggregation should keep; the orphans are those minus what the grouped query did count, so
the anti-join is folded into the existing join instead of hashing every event a second time.

``probe`` checks a warehouse without reading it (``pls-sync validate``): it connects, checks the
built-in tables and columns or runs the custom model with no rows, and returns every problem
found, each tied to the config key it is about. Both the run and the probe go through one
connection path (``connect_engine``, ``begin_read``, ``_reading``) and one error translation
(``_failure``), so they report a problem in the same words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType, TypeEngine

from connectors.sql_constructs import comparable_ts, email_host
from pls_sync.domains import classify_host
from pls_sync.errors import WarehouseError, redact
from pls_sync.models import (
    BUILTIN_METRICS,
    ProductAccount,
    UsageReadStats,
    WarehouseProbe,
    WarehouseProblem,
)

__all__ = ["BUILTIN_METRICS", "CUSTOM_MODEL_PARAMETERS", "SqlUsageSource"]

ACCOUNT_LEVELS = ("company", "workspace")


# Days back from as_of of each window start; "usual" weeks are the 8 weeks before the last 7 days.
_WINDOW_DAYS = {"7d": 7, "14d": 14, "28d": 28, "56d": 56, "63d": 63}
_USUAL_WEEKS = 8
CUSTOM_MODEL_PARAMETERS: tuple[str, ...] = ("as_of", *(f"since_{w}" for w in _WINDOW_DAYS))

_USER_COLUMNS = ("user_id", "email", "created_at", "is_admin")
_EVENT_COLUMNS = ("user_id", "event_name", "occurred_at")
_MASK_BITS = 30
_TRUE_STRINGS = ("true", "t", "1", "yes", "y")

# Summed per host and again across hosts; the raw column names of the grouped query.
_COUNT_COLUMNS = (
    "total_users",
    "active_users_7d",
    "active_users_28d",
    "new_users_7d",
    "new_users_usual",
    "events_7d",
    "events_usual",
    "events_28d",
    "events_prev_28d",
    "admin_changes_28d",
    "legal_page_views_14d",
    "pricing_page_views_14d",
    "admins",
)

# Same pattern SQLAlchemy's text() uses to find :name parameters (skips ::casts and \: escapes).
_BIND_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")

# Config keys the probe ties its problems to.
_URL_KEY: tuple[str | int, ...] = ("warehouse", "url")
_MODEL_KEY: tuple[str | int, ...] = ("warehouse", "model")
_SCHEMA_KEY: tuple[str | int, ...] = ("warehouse", "schema")
_TABLE_KEYS: dict[str, tuple[str | int, ...]] = {
    "users": ("warehouse", "users_table"),
    "events": ("warehouse", "events_table"),
}
# The column of each table the windows compare with bound timestamps.
_TIME_COLUMNS = {"users": "created_at", "events": "occurred_at"}
_FILE_BACKENDS = {"sqlite": "SQLite", "duckdb": "DuckDB"}
_WHITESPACE = re.compile(r"\s")


class _WarehouseUnavailable(WarehouseError):
    """The warehouse itself cannot be used: unreachable, refused, missing or not a database."""


@dataclass(frozen=True, slots=True)
class _Taxonomy:
    """Event names by the categories the built-in model counts."""

    legal: tuple[str, ...] = ()
    pricing: tuple[str, ...] = ()
    admin: tuple[str, ...] = ()
    core: tuple[str, ...] = ()
    enterprise: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, taxonomy: Mapping[str, Sequence[str]]) -> _Taxonomy:
        def names(category: str) -> tuple[str, ...]:
            values = taxonomy.get(category) or ()
            if isinstance(values, str):
                values = (values,)
            return tuple(dict.fromkeys(str(v) for v in values))

        return cls(
            legal=names("legal_page_view"),
            pricing=names("pricing_page_view"),
            admin=names("admin_change"),
            core=names("core_feature"),
            enterprise=names("enterprise_feature"),
            ignored=names("ignored"),
        )


@dataclass(frozen=True, slots=True)
class _Windows:
    """Window starts as UTC datetimes, from one ``as_of``."""

    as_of: datetime
    since: Mapping[str, datetime]

    @classmethod
    def at(cls, as_of: datetime) -> _Windows:
        as_of = _utc(as_of)
        return cls(as_of, {w: as_of - timedelta(days=d) for w, d in _WINDOW_DAYS.items()})


@dataclass(slots=True)
class TableColumns:
    """A table's reflected columns: actual name and type by lower-case name."""

    table: str
    names: dict[str, str]
    types: dict[str, TypeEngine[Any]]

    def table_clause(self, schema: str | None, wanted: Sequence[str]) -> sa.TableClause:
        """A table clause over the ``wanted`` columns that exist, by their actual names."""
        cols = [sa.column(self.names[c], self.types[c]) for c in wanted if c in self.names]
        return sa.table(self.table, *cols, schema=schema)

    def is_tz_aware(self, column: str) -> bool:
        """Whether ``column`` is a timezone-aware timestamp."""
        return bool(getattr(self.types.get(column), "timezone", False))


@dataclass(slots=True)
class _Account:
    """An account being merged from rows: summed columns, OR-ed feature bitmasks, earliest first_seen."""

    counts: list[Any]
    flags: list[Any]
    first_seen: datetime | None
    hosts: set[str] = field(default_factory=set)
    users: int = 0
    # workspace level: users per registrable domain, to find the dominant one
    domain_users: dict[str, int] = field(default_factory=dict)

    def merge(
        self, counts: Sequence[Any], flags: Sequence[Any], first_seen: datetime | None
    ) -> None:
        """Fold another row of the same account in (rare: most accounts are one row).

        An unknown (``None``) count stays unknown: a part we do not know makes the sum unknown.
        """
        self.counts = [
            None if a is None or b is None else a + b
            for a, b in zip(self.counts, counts, strict=True)
        ]
        self.flags = [int(a or 0) | int(b or 0) for a, b in zip(self.flags, flags, strict=True)]
        if first_seen is not None and (self.first_seen is None or first_seen < self.first_seen):
            self.first_seen = first_seen


def _first_line(text: str) -> str:
    """The first non-blank line of a driver message, stripped."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "").rstrip(".")


def _canonical_host(raw: Any) -> str:
    """The host the SQL cut out, lower-cased; ``''`` (junk) when not text or holding whitespace.

    Lower-casing happens here, not in SQL: SQLite's ``lower()`` folds ASCII only and Postgres's
    depends on the database's locale, Python's is the same everywhere.
    """
    if not isinstance(raw, str) or _WHITESPACE.search(raw):
        return ""
    return raw.lower()


def _file_format(header: bytes) -> str | None:
    """``"SQLite"`` or ``"DuckDB"`` from a database file's first 16 bytes, else ``None``."""
    if header.startswith(b"SQLite format 3\x00"):
        return "SQLite"
    if header[8:12] == b"DUCK":  # after the 8-byte checksum of DuckDB's main header
        return "DuckDB"
    return None


def _bound(name: str, value: datetime, tz: bool) -> ColumnElement[Any]:
    """A window bound as a bound parameter, aware only for a timezone-aware column."""
    value = value if tz else value.replace(tzinfo=None)
    return comparable_ts(sa.bindparam(name, value, sa.DateTime(tz)))


def _bounds(prefix: str, windows: _Windows, tz: bool) -> dict[str, ColumnElement[Any]]:
    """Every window start and ``as_of`` of ``windows`` as bound parameters named ``prefix_*``."""
    out = {w: _bound(f"{prefix}_since_{w}", since, tz) for w, since in windows.since.items()}
    out["as_of"] = _bound(f"{prefix}_as_of", windows.as_of, tz)
    return out


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """How many rows meet ``condition``, portable (no ``FILTER``)."""
    return sa.func.sum(sa.case((condition, 1), else_=0))


def _model_body(sql: str) -> tuple[str, bool]:
    """``sql`` up to its last token (trailing ``;``, comments, spaces cut); if it has 2 statements.

    A small scanner, not a parser: it knows quoted strings and identifiers (``'..'``, ``".."``,
    backticks) and comments (``--`` to the end of the line, ``/* */``), enough to find where the
    last statement ends and whether a ``;`` outside them is followed by more SQL.
    """
    end = 0
    semicolon = False
    several = False
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"`":
            close = sql.find(char, i + 1)
            i = n if close < 0 else close + 1
            end, several = i, several or semicolon
            continue
        if sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
            continue
        if sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close < 0 else close + 2
            continue
        if char == ";":
            semicolon = True
        elif not char.isspace():
            end, several = i + 1, several or semicolon
        i += 1
    return sql[:end], several


def _mask_count(features: int) -> int:
    """Bitmask columns needed for ``features`` feature flags."""
    return -(-features // _MASK_BITS)


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _earliest(signed_up: datetime | None, first_event: datetime | None) -> datetime | None:
    """An account's age evidence: its first sign-up, or an earlier event of its users.

    Keyed on sign-ups alone, a team whose user records were re-created (a migration, an
    identity-provider switch) would look days old and be held back by the age guard, though
    its events show months of use.
    """
    if signed_up is None:
        return first_event
    if first_event is None:
        return signed_up
    return min(signed_up, first_event)


def _to_datetime(value: Any) -> datetime | None:
    """A warehouse timestamp (datetime, date or ISO text) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and value.strip():
        try:
            return _utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _size_label(value: Any) -> str | None:
    """A ``company_size`` cell as text: stripped, a whole number as its digits, else ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))
    text = str(value).strip()
    return text or None


class _NotANumber(Exception):
    """A custom model's metric cell that is neither NULL nor a finite number."""


def _metric(value: Any) -> float | None:
    """A custom model's metric cell as a float; ``None`` for NULL, an unknown value (never 0).

    Raises ``_NotANumber`` for text, NaN, an infinity or a number beyond float range.
    """
    if value is None:
        return None
    if isinstance(value, int | float | Decimal):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # Decimal('sNaN'); an int beyond float range
            raise _NotANumber from None
        if math.isfinite(number):
            return number
    raise _NotANumber


def _row_users(value: Any) -> int:
    """The users a custom model's row stands for: its ``total_users`` when known, else one."""
    try:
        number = _metric(value)
    except _NotANumber:
        return 1
    return 1 if number is None else int(number)


def _type_from_name(name: str) -> TypeEngine[Any]:
    """A generic SQLAlchemy type from an information_schema ``data_type`` string."""
    upper = name.upper()
    if "BOOL" in upper:
        return sa.Boolean()
    if "TIME ZONE" in upper and "WITHOUT" not in upper or "TIMESTAMPTZ" in upper:
        return sa.DateTime(timezone=True)
    if "TIMESTAMP" in upper or "DATETIME" in upper:
        return sa.DateTime()
    if "DATE" in upper:
        return sa.Date()
    if "INT" in upper:
        return sa.Integer()
    if any(k in upper for k in ("DECIMAL", "NUMERIC", "DOUBLE", "FLOAT", "REAL")):
        return sa.Float()
    if any(k in upper for k in ("CHAR", "TEXT", "STRING")):
        return sa.String()
    return NullType()


class SqlUsageSource:
    """Reads usage aggregates from a SQL warehouse through SQLAlchemy (``UsageSource``).

    ``url`` is any SQLAlchemy URL; ``engine`` replaces it (tests, a shared engine).
    ``taxonomy`` maps categories (``legal_page_view``, ``pricing_page_view``, ``admin_change``,
    ``core_feature``, ``enterprise_feature``, ``ignored``) to event names.
    ``account_level`` is ``company`` (registrable email domain) or ``workspace``.
    ``model`` is ``builtin`` or the path of a SQL file (see the module docstring).
    """

    def __init__(
        self,
        url: str,
        *,
        taxonomy: Mapping[str, Sequence[str]],
        account_level: str = "company",
        model: str | Path = "builtin",
        schema: str | None = None,
        users_table: str = "users",
        events_table: str = "events",
        chunk_size: int = 5000,
        duckdb_memory_limit: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        if account_level not in ACCOUNT_LEVELS:
            raise WarehouseError(
                f"account_level must be one of {', '.join(ACCOUNT_LEVELS)}, not {account_level!r}"
            )
        if chunk_size < 1:
            raise WarehouseError(f"chunk_size must be at least 1, not {chunk_size}")
        self.account_level = account_level
        self.taxonomy = _Taxonomy.from_mapping(taxonomy)
        self.model_path = None if str(model) == "builtin" else Path(model)
        self.schema = schema or None
        self.users_table = users_table
        self.events_table = events_table
        self.chunk_size = chunk_size
        self.duckdb_memory_limit = duckdb_memory_limit
        self._engine = engine
        self._url: URL | None = None
        if engine is None:
            if not url.strip():
                raise WarehouseError("the warehouse URL is empty: set warehouse.url")
            try:
                self._url = make_url(url)
                self._url.get_dialect()
            except (NoSuchModuleError, ImportError) as exc:
                raise WarehouseError(
                    f"no SQLAlchemy dialect installed for warehouse URL {self._safe_url(url)} "
                    f"({_first_line(str(exc))}): install the dialect's package "
                    "(e.g. snowflake-sqlalchemy) or fix the URL's scheme"
                ) from None
            except (ArgumentError, ValueError) as exc:
                detail = redact(_first_line(str(exc)), [url])
                raise WarehouseError(
                    f"invalid warehouse URL {self._safe_url(url)} ({detail}): write it as "
                    "dialect[+driver]://user:password@host[:port]/database"
                ) from None

    # -- public -------------------------------------------------------------------------------

    def read_accounts(self, as_of: datetime, stats: UsageReadStats) -> Iterator[ProductAccount]:
        """Yield one account per company (or workspace) as of ``as_of``, sorted by key.

        Rows read, users counted, skips (with reasons) and, for the built-in model, dropped
        events go into ``stats``. Raises ``WarehouseError`` when the warehouse is unreachable or
        lacks a table or column.
        """
        windows = _Windows.at(as_of)
        accounts = self._collect(windows, stats)
        stats.accounts += len(accounts)
        yield from accounts

    def probe(self, as_of: datetime) -> WarehouseProbe:
        """Check that a run as of ``as_of`` could read this warehouse, without reading it.

        Connects; for the built-in model, checks both tables (in ``schema``) with every required
        column and a usable time column type, then runs its statements with no rows; for a
        custom model, checks the file and its bind parameters, runs it with no rows and checks
        its ``domain`` (and ``workspace_id``) columns. Returns every problem found at once, each
        tied to its config key, and the custom model's columns. Never raises for anything a
        user can cause (an unknown dialect or a bad URL already failed in the constructor).
        """
        windows = _Windows.at(as_of)
        problems: list[WarehouseProblem] = []
        model_sql = self._probe_model_file(windows, problems) if self.model_path else None
        columns: tuple[str, ...] | None = None
        try:
            with self._reading() as conn:
                if self.model_path is None:
                    self._probe_builtin(conn, windows, problems)
                elif model_sql is not None:
                    columns = self._probe_model(conn, model_sql, windows, problems)
        except WarehouseError as exc:
            key = (
                _URL_KEY if isinstance(exc, _WarehouseUnavailable) else self._failure_key(str(exc))
            )
            problems.append(WarehouseProblem(key, str(exc)))
            columns = None
        return WarehouseProbe(tuple(problems), columns)

    def event_name_counts(self, as_of: datetime, days: int = 90) -> list[tuple[str, int]]:
        """Events per ``event_name`` in ``[as_of - days, as_of)``, most frequent first.

        Counted in the warehouse (one GROUP BY, the bounds bound as parameters); NULL and empty
        names are left out; ties are ordered by name. Built-in model only: it reads the events
        table. Raises ``WarehouseError`` when the warehouse cannot be read.
        """
        if self.model_path is not None:
            raise WarehouseError(
                "event name counts need the built-in model's events table; "
                f"this warehouse uses the custom model {self.model_path}"
            )
        if days < 1:
            raise WarehouseError(f"days must be at least 1, not {days}")
        with self._reading() as conn:
            found, problems = self._inspect_tables(conn, roles=("events",))
            if problems:
                raise WarehouseError(self._mismatch(problems))
            query = self._event_names_query(found["events"], _utc(as_of), days)
            rows = conn.execute(query).all()
        return [(str(name), int(count)) for name, count in rows]

    def read_company_sizes(self, as_of: datetime) -> dict[str, dict[str, int]]:
        """Per account key, how many of its users reported each ``users.company_size`` value.

        The keys are those ``read_accounts`` gives: the registrable domain of the users' email
        hosts (hosts of one domain merged; free mail, disposable and junk hosts left out), or
        ``workspace:<id>`` at the workspace level. Users are those the built-in read counts as
        of ``as_of`` (created before it, or without a creation time); values are the stored
        text, stripped (a whole number as its digits); NULL and empty values are left out, and
        so is an account none of whose users reported one. One GROUP BY over the users table,
        no events. ``{}`` for a custom model (its own columns are its business) and for a users
        table without ``company_size``. Raises ``WarehouseError`` when the warehouse cannot be
        read or the users table lacks a column the built-in model needs.
        """
        if self.model_path is not None:
            return {}
        with self._reading() as conn:
            found, problems = self._inspect_tables(conn, roles=("users",))
            if problems:
                raise WarehouseError(self._mismatch(problems))
            users = found["users"]
            if "company_size" not in users.names:
                return {}
            query = self._company_sizes_query(users, _utc(as_of))
            result = conn.execution_options(stream_results=True, yield_per=self.chunk_size).execute(
                query
            )
            return self._merge_company_sizes(result.partitions())

    def describe(self) -> str:
        """The warehouse URL without its password, for logs and reports."""
        return self._current_url().render_as_string(hide_password=True)

    def builtin_query(
        self,
        as_of: datetime,
        *,
        users_types: Mapping[str, TypeEngine[Any]] | None = None,
        events_types: Mapping[str, TypeEngine[Any]] | None = None,
    ) -> sa.Select[*tuple[Any, ...]]:
        """The built-in model's statement as of ``as_of``, built without connecting or running.

        It is the statement ``read_accounts`` executes once it has reflected the tables; the
        column types (by lower-case name) default to the contract's: text ids and emails, naive
        timestamps, a boolean ``is_admin``. Compile it with a dialect to see that warehouse's SQL.
        """
        users, events = self._contract_tables(users_types, events_types)
        return self._builtin_query(users, events, _Windows.at(as_of))

    def dropped_events_query(
        self, as_of: datetime, *, events_types: Mapping[str, TypeEngine[Any]] | None = None
    ) -> sa.Select[*tuple[Any, ...]]:
        """The built-in read's event-drop counts as of ``as_of``, built without connecting.

        One row: ``no_time``, ``future``, ``no_user``, ``no_name`` and ``in_window`` (the
        events the grouped query should count); ``unknown_user`` is ``in_window`` minus what the
        grouped query did count (see ``_count_dropped_events``). Types as ``builtin_query``.
        """
        _, events = self._contract_tables(None, events_types)
        return self._dropped_events_query(events, _Windows.at(as_of))

    # -- engine and connection ----------------------------------------------------------------

    def _current_url(self) -> URL:
        if self._url is not None:
            return self._url
        assert self._engine is not None
        return self._engine.url

    def _secrets(self) -> list[str]:
        password = self._current_url().password
        return [password] if password else []

    def redact_secrets(self, text: str) -> str:
        """``text`` with the warehouse URL's password masked."""
        return redact(text, self._secrets())

    def _safe_url(self, url: str) -> str:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:
            return redact(url)

    def _database_file(self) -> Path | None:
        """The file of a SQLite or DuckDB URL; ``None`` for in-memory or server warehouses."""
        url = self._current_url()
        database = url.database or ""
        if url.get_backend_name() not in _FILE_BACKENDS or database in ("", ":memory:"):
            return None
        if database.startswith((":memory:", "file:", "md:", "motherduck:")):
            return None
        return Path(database)

    def connect_engine(self) -> tuple[Engine, bool]:
        """The engine to read with and whether it is ours (disposed after the read).

        Raises ``WarehouseError`` (one line, no password) when the warehouse file is missing or
        the URL's driver cannot be loaded.
        """
        if self._engine is not None:
            return self._engine, False
        assert self._url is not None
        url = self._url
        backend = url.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend in _FILE_BACKENDS:
            # Never keep the file (and DuckDB's lock on it) open between runs.
            kwargs["poolclass"] = NullPool
            path = self._database_file()
            if path is not None:
                self._check_database_file(path, _FILE_BACKENDS[backend])
                if backend == "sqlite":
                    url = url.set(
                        database=f"file:{path.resolve()}",
                        query={**url.query, "mode": "ro", "uri": "true"},
                    )
                else:
                    kwargs["connect_args"] = {"read_only": True}
            if backend == "duckdb" and self.duckdb_memory_limit:
                # DuckDB's hash tables for a 20M-event aggregate take ~450 MB by default; a limit
                # makes it spill to its temp directory instead (measured in benchmarks/).
                connect = kwargs.setdefault("connect_args", {})
                connect["config"] = {"memory_limit": self.duckdb_memory_limit.strip()}
        elif (
            backend == "postgresql"
            and "connect_timeout" not in url.query
            and url.get_driver_name() in ("psycopg", "psycopg2")
        ):
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            return sa.create_engine(url, **kwargs), True
        except ImportError as exc:
            raise _WarehouseUnavailable(
                f"the database driver of the warehouse URL {self.describe()} is not installed "
                f"({_first_line(str(exc))}): install it, or name an installed driver in "
                "warehouse.url"
            ) from None
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise _WarehouseUnavailable(
                f"cannot open warehouse {self.describe()}: "
                + self.redact_secrets(_first_line(str(exc)))
            ) from None

    @staticmethod
    def _check_database_file(path: Path, kind: str) -> None:
        """Refuse a missing warehouse file (never create one), a directory or another format.

        The format is told from the file's first bytes, before a driver sees it: DuckDB would
        otherwise take a SQLite file as a reason to download its SQLite extension, and open a
        ``.csv`` as an in-memory database.
        """
        if path.is_dir():
            raise _WarehouseUnavailable(
                f"{path} is a directory, not a {kind} database file: "
                "point warehouse.url at the database file"
            )
        if not path.is_file():
            raise _WarehouseUnavailable(
                f"warehouse file not found: {path} (pls-sync never creates it): "
                "check the path in warehouse.url"
            )
        try:
            with path.open("rb") as file:
                header = file.read(16)
        except OSError as exc:
            raise _WarehouseUnavailable(
                f"cannot open the warehouse file {path} ({exc.strerror or exc}): "
                "let the user running pls-sync read it"
            ) from None
        found = _file_format(header)
        if found == kind or (kind == "SQLite" and not header):  # SQLite: empty file, empty db
            return
        scheme = {"SQLite": "sqlite", "DuckDB": "duckdb"}
        if found is not None:
            raise _WarehouseUnavailable(
                f"{path} is a {found} database, not a {kind} database file: "
                f"write warehouse.url as {scheme[found]}:///{path}"
            )
        raise _WarehouseUnavailable(
            f"{path} is not a {kind} database file: point warehouse.url at a {kind} database"
        )

    def begin_read(self, conn: Connection, owned: bool) -> None:
        """Make the transaction read-only, one snapshot and UTC where the dialect allows it."""
        name = conn.dialect.name
        if name == "postgresql":
            # One snapshot for every statement of the read (drop counts, then the accounts).
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        elif name == "duckdb":
            conn.exec_driver_sql("SET enable_progress_bar = false")  # it would print to stdout
            if owned:
                conn.exec_driver_sql("SET TimeZone = 'UTC'")

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A read-only UTC connection; every failure leaves as a one-line ``WarehouseError``.

        Failing to connect (or to start the read) is ``_WarehouseUnavailable``; a statement that
        fails afterwards is a query failure, unless the driver's words say the warehouse itself
        cannot be used (a file that is not a database only says so at the first query).
        """
        engine, owned = self.connect_engine()
        try:
            try:
                conn = engine.connect()
            except (SQLAlchemyError, OSError) as exc:
                raise self._failure(exc, connecting=True) from None
            with conn:
                try:
                    self.begin_read(conn, owned)
                except (SQLAlchemyError, OSError) as exc:
                    raise self._failure(exc, connecting=True) from None
                try:
                    yield conn
                except (SQLAlchemyError, OSError) as exc:
                    raise self._failure(exc, connecting=False) from None
        finally:
            if owned:
                engine.dispose()

    def _restart_read(self, conn: Connection) -> None:
        """End a transaction a failed statement spoiled and start a fresh read-only one."""
        conn.rollback()
        self.begin_read(conn, owned=self._engine is None)

    def _driver_detail(self, exc: BaseException) -> str:
        """The first line of the driver's own message, redacted."""
        original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        return self.redact_secrets(_first_line(str(original)) or type(original).__name__)

    def _failure(self, exc: BaseException, *, connecting: bool) -> WarehouseError:
        """A driver or SQLAlchemy error as one clear, redacted line saying what to do."""
        detail = self._driver_detail(exc)
        lowered = detail.lower()
        where = self.describe()
        kind = _FILE_BACKENDS.get(self._current_url().get_backend_name())
        if kind is not None:
            file_problem = self._file_failure(kind, detail)
            if file_problem is not None:
                return file_problem
        if connecting and any(
            words in lowered
            for words in ("authentication failed", "password", "access denied", "not authorized")
        ):
            return _WarehouseUnavailable(
                f"the warehouse {where} refused the credentials ({detail}): "
                "check the user and password in warehouse.url"
            )
        if connecting or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            return _WarehouseUnavailable(
                f"cannot connect to the warehouse {where} ({detail}): check warehouse.url, "
                "that the server is running and that this machine can reach it"
            )
        return WarehouseError(f"warehouse query failed on {where}: {detail}")

    def _file_failure(self, kind: str, detail: str) -> WarehouseError | None:
        """A SQLite or DuckDB file that cannot be used, in the words of what to do about it.

        SQLite opens lazily: "file is not a database" only comes with the first query.
        """
        lowered = detail.lower()
        where = str(self._database_file() or self.describe())
        if "not a valid duckdb database file" in lowered or "file is not a database" in lowered:
            return _WarehouseUnavailable(
                f"{where} is not a {kind} database file: point warehouse.url at a {kind} database"
            )
        if "could not set lock" in lowered or "database is locked" in lowered:
            return _WarehouseUnavailable(
                f"the warehouse file {where} is locked by another process ({detail}): "
                "retry when it has finished writing"
            )
        if "permission denied" in lowered or "unable to open database" in lowered:
            return _WarehouseUnavailable(
                f"cannot open the warehouse file {where} ({detail}): "
                "let the user running pls-sync read it"
            )
        return None

    def _collect(self, windows: _Windows, stats: UsageReadStats) -> list[ProductAccount]:
        with self._reading() as conn:
            if self.model_path is not None:
                return self._read_custom(conn, windows, stats)
            return self._read_builtin(conn, windows, stats)

    # -- schema check ------------------------------------------------------------------------

    def reflect(self, conn: Connection, table: str) -> TableColumns | None:
        """The table's columns, or ``None`` when the table does not exist."""
        inspector = sa.inspect(conn)
        if not inspector.has_table(table, schema=self.schema):
            return None
        try:
            reflected = inspector.get_columns(table, schema=self.schema)
            pairs = [(str(c["name"]), c["type"]) for c in reflected]
        except (SQLAlchemyError, NotImplementedError):
            # Some dialects (duckdb-engine on recent DuckDB) fail to reflect through pg_catalog;
            # information_schema holds the same answer on every SQL-standard warehouse.
            self._restart_read(conn)
            query = sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = :table"
                + (" AND table_schema = :schema" if self.schema else "")
                + " ORDER BY ordinal_position"
            )
            params = {"table": table, **({"schema": self.schema} if self.schema else {})}
            pairs = [(str(n), _type_from_name(str(t))) for n, t in conn.execute(query, params)]
        return TableColumns(
            table=table,
            names={name.lower(): name for name, _ in pairs},
            types={name.lower(): type_ for name, type_ in pairs},
        )

    def _required_tables(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Per role (``users``, ``events``): the configured table and the columns it needs."""
        workspace = ("workspace_id",) if self.account_level == "workspace" else ()
        return {
            "users": (self.users_table, (*_USER_COLUMNS, *workspace)),
            "events": (self.events_table, (*_EVENT_COLUMNS, *workspace)),
        }

    def _inspect_tables(
        self, conn: Connection, roles: Sequence[str] = ("users", "events")
    ) -> tuple[dict[str, TableColumns], list[WarehouseProblem]]:
        """Reflect the tables of ``roles``; every missing table, column or unusable type at once."""
        required = self._required_tables()
        where = f" in schema {self.schema!r}" if self.schema else ""
        found: dict[str, TableColumns] = {}
        problems: list[WarehouseProblem] = []
        for role in roles:
            table, columns = required[role]
            key = _TABLE_KEYS[role]
            reflected = self.reflect(conn, table)
            if reflected is None:
                problems.append(
                    WarehouseProblem(
                        key,
                        f"table {table!r} not found{where}: create it, or set "
                        f"warehouse.{role}_table to the table that holds the {role}",
                    )
                )
                continue
            found[role] = reflected
            missing = [c for c in columns if c not in reflected.names]
            if missing:
                problems.append(
                    WarehouseProblem(
                        key,
                        f"table {table!r} is missing column(s): {', '.join(missing)} "
                        f"(the built-in model reads {', '.join(columns)})",
                    )
                )
            problems.extend(self._type_problems(role, reflected))
        if self.schema and not found and not self._schema_exists(conn):
            problems = [
                WarehouseProblem(
                    _SCHEMA_KEY,
                    f"schema {self.schema!r} not found in {self.describe()}: "
                    "check warehouse.schema",
                )
            ]
        return found, problems

    @staticmethod
    def _type_problems(role: str, reflected: TableColumns) -> list[WarehouseProblem]:
        """A time column stored as a number or a boolean: window comparisons cannot work."""
        column = _TIME_COLUMNS[role]
        type_ = reflected.types.get(column)
        if not isinstance(type_, sa.Integer | sa.Numeric | sa.Boolean):
            return []
        try:
            type_name = str(type_)
        except SQLAlchemyError:
            type_name = type(type_).__name__.upper()
        return [
            WarehouseProblem(
                _TABLE_KEYS[role],
                f"column {reflected.table}.{reflected.names[column]} is {type_name}: the built-in "
                "model needs a timestamp, a date or ISO 8601 text (convert it in a view)",
            )
        ]

    def _schema_exists(self, conn: Connection) -> bool:
        """Whether ``schema`` exists; ``True`` when the dialect cannot tell."""
        try:
            return bool(sa.inspect(conn).has_schema(str(self.schema)))
        except (SQLAlchemyError, NotImplementedError):
            self._restart_read(conn)
            return True

    def _mismatch(self, problems: Sequence[WarehouseProblem]) -> str:
        return f"the warehouse {self.describe()} does not match the built-in model: " + "; ".join(
            p.message for p in problems
        )

    def _check_tables(self, conn: Connection) -> tuple[TableColumns, TableColumns]:
        """Reflect both tables; report every missing table and column at once."""
        found, problems = self._inspect_tables(conn)
        if problems:
            raise WarehouseError(self._mismatch(problems))
        return found["users"], found["events"]

    def _contract_tables(
        self,
        users_types: Mapping[str, TypeEngine[Any]] | None,
        events_types: Mapping[str, TypeEngine[Any]] | None,
    ) -> tuple[TableColumns, TableColumns]:
        """Both tables as the contract describes them, types overridden by lower-case name."""
        defaults: dict[str, TypeEngine[Any]] = {
            "user_id": sa.String(),
            "email": sa.String(),
            "workspace_id": sa.String(),
            "created_at": sa.DateTime(),
            "is_admin": sa.Boolean(),
            "event_name": sa.String(),
            "occurred_at": sa.DateTime(),
        }

        def columns(
            table: str, names: Sequence[str], given: Mapping[str, TypeEngine[Any]] | None
        ) -> TableColumns:
            types = {n: (given or {}).get(n, defaults[n]) for n in names}
            return TableColumns(table=table, names={n: n for n in names}, types=types)

        extra = ("workspace_id",)
        users = columns(self.users_table, (*_USER_COLUMNS, *extra), users_types)
        events = columns(self.events_table, (*_EVENT_COLUMNS, *extra), events_types)
        return users, events

    # -- probe -------------------------------------------------------------------------------

    def _failure_key(self, message: str) -> tuple[str | int, ...]:
        """The config key a query failure is most likely about: the model, a table it names."""
        if self.model_path is not None:
            return _MODEL_KEY
        text = message.replace(self.describe(), "").lower()
        for role, (table, _) in self._required_tables().items():
            if re.search(rf"\b{re.escape(table.lower())}\b", text):
                return _TABLE_KEYS[role]
        return _URL_KEY

    def _probe_builtin(
        self, conn: Connection, windows: _Windows, problems: list[WarehouseProblem]
    ) -> None:
        """Tables and columns, then the run's own statements with no rows (types, privileges)."""
        found, table_problems = self._inspect_tables(conn)
        problems.extend(table_problems)
        if table_problems:
            return
        users, events = found["users"], found["events"]
        for statement in (
            self._builtin_query(users, events, windows),
            self._dropped_events_query(events, windows),
        ):
            empty = sa.select(statement.subquery("pls_sync_probe")).where(sa.text("1 = 0"))
            try:
                conn.execute(empty).close()
            except DBAPIError as exc:
                self._raise_if_unavailable(exc)
                detail = self._driver_detail(exc)
                problems.append(
                    WarehouseProblem(
                        self._failure_key(detail),
                        f"the built-in model's query fails on {self.describe()}: {detail}",
                    )
                )
                return

    def _probe_model_file(self, windows: _Windows, problems: list[WarehouseProblem]) -> str | None:
        """The custom model's SQL when it is readable, one statement and binds known names."""
        try:
            sql = self._model_sql()
            self._model_statement(sql, windows)
        except WarehouseError as exc:
            problems.append(WarehouseProblem(_MODEL_KEY, str(exc)))
            return None
        body, several = _model_body(sql)
        if not body:
            problems.append(
                WarehouseProblem(
                    _MODEL_KEY, f"model {self.model_path} holds no SQL: write a SELECT"
                )
            )
            return None
        if several:
            problems.append(
                WarehouseProblem(
                    _MODEL_KEY,
                    f"model {self.model_path} holds more than one statement: "
                    "a model is one SELECT returning one row per account",
                )
            )
            return None
        return body

    def _probe_model(
        self,
        conn: Connection,
        body: str,
        windows: _Windows,
        problems: list[WarehouseProblem],
    ) -> tuple[str, ...] | None:
        """Run the model with no rows; its columns, or ``None`` with the database's error.

        ``SELECT * FROM (<model>) pls_sync_probe WHERE 1 = 0`` lets the database compile the
        model and stop before reading anything. A dialect that refuses the wrapper (T-SQL takes
        no CTE or ORDER BY in a derived table) gets the model itself, fetching no row: for valid
        SQL that costs one execution of the model, and for broken SQL its error then names the
        user's own statement.
        """
        wrapped = f"SELECT * FROM (\n{body}\n) pls_sync_probe WHERE 1 = 0"
        try:
            keys = self._result_columns(conn, self._model_statement(wrapped, windows))
        except DBAPIError as exc:
            self._raise_if_unavailable(exc)
            self._restart_read(conn)
            try:
                keys = self._result_columns(conn, self._model_statement(body, windows))
            except DBAPIError as bare:
                self._raise_if_unavailable(bare)
                detail = self._driver_detail(bare)
                problems.append(
                    WarehouseProblem(
                        _MODEL_KEY,
                        f"model {self.model_path} does not run on {self.describe()}: {detail}",
                    )
                )
                return None
        missing = self._missing_model_columns(keys)
        if missing:
            problems.append(WarehouseProblem(_MODEL_KEY, missing))
        return tuple(keys)

    def _raise_if_unavailable(self, exc: DBAPIError) -> None:
        failure = self._failure(exc, connecting=False)
        if isinstance(failure, _WarehouseUnavailable):
            raise failure from None

    @staticmethod
    def _result_columns(conn: Connection, statement: sa.TextClause) -> list[str]:
        """The result columns of ``statement``, fetching no row."""
        # Per statement: Connection.execution_options() would change the connection itself.
        result = conn.execute(statement, execution_options={"stream_results": True})
        try:
            return [str(k) for k in result.keys()]  # noqa: SIM118 - a Result, not a dict
        finally:
            result.close()

    # -- built-in model ------------------------------------------------------------------------

    def _builtin_query(
        self, users: TableColumns, events: TableColumns, windows: _Windows
    ) -> sa.Select[*tuple[Any, ...]]:
        """The grouped query: events per user, joined to users, grouped by host (and workspace)."""
        by_workspace = self.account_level == "workspace"
        extra = ("workspace_id",) if by_workspace else ()
        u = users.table_clause(self.schema, (*_USER_COLUMNS, *extra))
        e = events.table_clause(self.schema, (*_EVENT_COLUMNS, *extra))
        tax = self.taxonomy

        eb = _bounds("ev", windows, events.is_tz_aware("occurred_at"))
        ub = _bounds("u", windows, users.is_tz_aware("created_at"))

        def any_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
            return sa.func.max(sa.case((condition, 1), else_=0))

        def zero() -> ColumnElement[Any]:
            return sa.literal_column("0")

        t = comparable_ts(e.c.occurred_at)
        name = e.c.event_name

        def named(names: tuple[str, ...], since: str) -> ColumnElement[Any]:
            return _count_if(sa.and_(t >= eb[since], name.in_(names))) if names else zero()

        feature_columns = [
            any_if(sa.and_(t >= eb["28d"], name == sa.bindparam(f"core_{i}", f))).label(f"core_{i}")
            for i, f in enumerate(tax.core)
        ] + [
            any_if(sa.and_(t >= eb["28d"], name == sa.bindparam(f"ent_{i}", f))).label(f"ent_{i}")
            for i, f in enumerate(tax.enterprise)
        ]
        event_filters = [t >= eb["63d"], t < eb["as_of"], name.is_not(None), name != ""]
        if tax.ignored:
            event_filters.append(name.not_in(tax.ignored))
        per_user = (
            sa.select(
                e.c.user_id,
                *((e.c.workspace_id,) if by_workspace else ()),
                _count_if(t >= eb["7d"]).label("ev_7d"),
                _count_if(sa.and_(t >= eb["63d"], t < eb["7d"])).label("ev_usual"),
                _count_if(t >= eb["28d"]).label("ev_28d"),
                _count_if(sa.and_(t >= eb["56d"], t < eb["28d"])).label("ev_prev_28d"),
                named(tax.legal, "14d").label("ev_legal"),
                named(tax.pricing, "14d").label("ev_pricing"),
                named(tax.admin, "28d").label("ev_admin"),
                *feature_columns,
                sa.func.min(e.c.occurred_at).label("first_ev"),
            )
            .where(*event_filters)
            .group_by(e.c.user_id, *((e.c.workspace_id,) if by_workspace else ()))
            .subquery("per_user")
        )
        join_on = per_user.c.user_id == u.c.user_id
        if by_workspace:
            join_on = sa.and_(join_on, per_user.c.workspace_id == u.c.workspace_id)

        def total(column: str) -> ColumnElement[Any]:
            return sa.func.sum(sa.func.coalesce(per_user.c[column], 0))

        created = comparable_ts(u.c.created_at)
        # Labelled once and grouped by the label: BigQuery cannot group by an anonymous function.
        host = email_host(u.c.email).label("host")
        group = (host, u.c.workspace_id) if by_workspace else (host,)
        return (
            sa.select(
                host,
                *(
                    (sa.type_coerce(u.c.workspace_id, NullType()).label("workspace_id"),)
                    if by_workspace
                    else ()
                ),
                sa.func.count().label("total_users"),
                _count_if(sa.func.coalesce(per_user.c.ev_7d, 0) > 0).label("active_users_7d"),
                _count_if(sa.func.coalesce(per_user.c.ev_28d, 0) > 0).label("active_users_28d"),
                _count_if(created >= ub["7d"]).label("new_users_7d"),
                _count_if(sa.and_(created >= ub["63d"], created < ub["7d"])).label(
                    "new_users_usual"
                ),
                total("ev_7d").label("events_7d"),
                total("ev_usual").label("events_usual"),
                total("ev_28d").label("events_28d"),
                total("ev_prev_28d").label("events_prev_28d"),
                total("ev_admin").label("admin_changes_28d"),
                total("ev_legal").label("legal_page_views_14d"),
                total("ev_pricing").label("pricing_page_views_14d"),
                _count_if(self._truthy(u.c.is_admin)).label("admins"),
                *self._feature_masks(per_user, "core", len(tax.core)),
                *self._feature_masks(per_user, "ent", len(tax.enterprise)),
                sa.type_coerce(sa.func.min(u.c.created_at), NullType()).label("first_seen"),
                sa.type_coerce(sa.func.min(per_user.c.first_ev), NullType()).label("first_event"),
            )
            .select_from(u.outerjoin(per_user, join_on))
            .where(sa.or_(u.c.created_at.is_(None), created < ub["as_of"]))
            .group_by(*group)
        )

    def _company_sizes_query(
        self, users: TableColumns, as_of: datetime
    ) -> sa.Select[*tuple[Any, ...]]:
        """Users per host (and workspace) and ``company_size`` value, NULL sizes left out.

        The same users, hosts and workspaces as the built-in query: ``email_host`` cut the same
        way, users created at or after ``as_of`` left out, those without a time kept.
        """
        by_workspace = self.account_level == "workspace"
        extra = ("workspace_id",) if by_workspace else ()
        u = users.table_clause(self.schema, ("email", "created_at", "company_size", *extra))
        before = _bound("u_as_of", as_of, users.is_tz_aware("created_at"))
        host = email_host(u.c.email).label("host")
        size = u.c.company_size
        group = (host, u.c.workspace_id, size) if by_workspace else (host, size)
        return (
            sa.select(
                host,
                *(
                    (sa.type_coerce(u.c.workspace_id, NullType()).label("workspace_id"),)
                    if by_workspace
                    else ()
                ),
                sa.type_coerce(size, NullType()).label("company_size"),
                sa.func.count().label("users"),
            )
            .where(
                size.is_not(None),
                sa.or_(u.c.created_at.is_(None), comparable_ts(u.c.created_at) < before),
            )
            .group_by(*group)
        )

    def _merge_company_sizes(
        self, partitions: Iterator[Sequence[Any]]
    ) -> dict[str, dict[str, int]]:
        """Rows of ``_company_sizes_query`` folded into counts per account key and size."""
        by_workspace = self.account_level == "workspace"
        sizes: dict[str, dict[str, int]] = {}
        for partition in partitions:
            for row in partition:
                size = _size_label(row[-2])
                if size is None or (by_workspace and row[1] is None):
                    continue
                verdict = classify_host(_canonical_host(row[0]))
                if verdict.reason is not None or verdict.domain is None:
                    continue
                key = f"workspace:{row[1]}" if by_workspace else verdict.domain
                counts = sizes.setdefault(key, {})
                counts[size] = counts.get(size, 0) + int(row[-1])
        return sizes

    def _dropped_events_query(
        self, events: TableColumns, windows: _Windows
    ) -> sa.Select[*tuple[Any, ...]]:
        """One row: events the grouped query cannot use, per reason, and those it should use.

        A single pass over the events table, no join: ``no_time`` (no usable time), ``future``
        (at or after ``as_of``), and in the 63-day window ``no_user`` (NULL user id),
        ``no_name`` (NULL or empty name) and ``in_window`` (user id and name present: what the
        per-user pre-aggregation counts). Ignored names are left out of every count.
        """
        e = events.table_clause(self.schema, _EVENT_COLUMNS)
        eb = _bounds("ev", windows, events.is_tz_aware("occurred_at"))
        t = comparable_ts(e.c.occurred_at)
        name = e.c.event_name
        in_window = sa.and_(t >= eb["63d"], t < eb["as_of"])
        with_user = sa.and_(in_window, e.c.user_id.is_not(None))
        counts: dict[str, ColumnElement[bool]] = {
            "no_time": t.is_(None),
            "future": t >= eb["as_of"],
            "no_user": sa.and_(in_window, e.c.user_id.is_(None)),
            "no_name": sa.and_(with_user, sa.or_(name.is_(None), name == "")),
            "in_window": sa.and_(with_user, name.is_not(None), name != ""),
        }
        query = sa.select(*(_count_if(c).label(label) for label, c in counts.items()))
        query = query.select_from(e)
        if self.taxonomy.ignored:
            query = query.where(sa.or_(name.is_(None), name.not_in(self.taxonomy.ignored)))
        return query

    def _event_names_query(
        self, events: TableColumns, as_of: datetime, days: int
    ) -> sa.Select[tuple[Any, int]]:
        """Events per name in ``[as_of - days, as_of)``, most frequent first, then by name."""
        e = events.table_clause(self.schema, ("event_name", "occurred_at"))
        tz = events.is_tz_aware("occurred_at")
        t = comparable_ts(e.c.occurred_at)
        count = sa.func.count().label("event_count")
        return (
            sa.select(e.c.event_name, count)
            .where(
                t >= _bound("since", as_of - timedelta(days=days), tz),
                t < _bound("as_of", as_of, tz),
                e.c.event_name.is_not(None),
                e.c.event_name != "",
            )
            .group_by(e.c.event_name)
            .order_by(count.desc(), e.c.event_name)
        )

    @staticmethod
    def _feature_masks(per_user: sa.Subquery, prefix: str, count: int) -> list[ColumnElement[Any]]:
        """Per host, which features were used, packed as bits (feature i of a chunk is 2**i).

        Distinct-feature counts cannot be summed across hosts of one company, so the flags come
        back as bitmasks that Python ORs; one column per 30 features keeps them 32-bit integers.
        """
        masks: list[ColumnElement[Any]] = []
        for chunk, start in enumerate(range(0, count, _MASK_BITS)):
            bits = [
                sa.func.max(sa.func.coalesce(per_user.c[f"{prefix}_{i}"], 0))
                * sa.literal_column(str(1 << (i - start)))
                for i in range(start, min(count, start + _MASK_BITS))
            ]
            expr = bits[0]
            for bit in bits[1:]:
                expr = expr + bit
            masks.append(expr.label(f"{prefix}_mask_{chunk}"))
        return masks

    @staticmethod
    def _truthy(column: sa.ColumnClause[Any]) -> ColumnElement[bool]:
        """``is_admin`` as a condition, whatever type the warehouse stores it as."""
        type_ = column.type
        if isinstance(type_, sa.Boolean):
            return column == sa.true()
        if isinstance(type_, sa.Integer | sa.Numeric | sa.Float):
            return column != 0
        if isinstance(type_, sa.String):
            return sa.func.lower(column).in_(_TRUE_STRINGS)
        return column == sa.true()

    def _read_builtin(
        self, conn: Connection, windows: _Windows, stats: UsageReadStats
    ) -> list[ProductAccount]:
        users, events = self._check_tables(conn)
        drops = self._event_drop_counts(conn, events, windows)
        query = self._builtin_query(users, events, windows)
        by_workspace = self.account_level == "workspace"
        # Row layout: host, [workspace_id], _COUNT_COLUMNS..., feature flags..., first_seen,
        # first_event.
        first = 2 if by_workspace else 1
        flags_at = first + len(_COUNT_COLUMNS)
        n_flags = _mask_count(len(self.taxonomy.core)) + _mask_count(len(self.taxonomy.enterprise))
        # events_7d + events_usual of a row: its users' events over the whole 63-day window.
        recent_at = first + _COUNT_COLUMNS.index("events_7d")
        usual_at = first + _COUNT_COLUMNS.index("events_usual")
        counted = 0
        accounts: dict[str, _Account] = {}
        result = conn.execution_options(stream_results=True, yield_per=self.chunk_size).execute(
            query
        )
        # Per row: one memoised classify_host and a tuple slice; merging only on shared keys.
        for partition in result.partitions():
            stats.rows_read += len(partition)
            for row in partition:
                counted += int(row[recent_at] or 0) + int(row[usual_at] or 0)
                host = _canonical_host(row[0])
                n_users = int(row[first])
                verdict = classify_host(host)
                domain = verdict.domain if verdict.reason is None else None
                if by_workspace and row[1] is None:
                    stats.skip("no_workspace", users=n_users)
                    continue
                if domain is None:
                    stats.skip(verdict.reason or "invalid", users=n_users)
                    continue
                key = f"workspace:{row[1]}" if by_workspace else domain
                counts = row[first:flags_at]
                flags = row[flags_at : flags_at + n_flags]
                first_seen = _earliest(_to_datetime(row[-2]), _to_datetime(row[-1]))
                account = accounts.get(key)
                if account is None:
                    account = accounts[key] = _Account(list(counts), list(flags), first_seen)
                else:
                    account.merge(counts, flags, first_seen)
                account.users += n_users
                account.hosts.add(host)
                account.domain_users[domain] = account.domain_users.get(domain, 0) + n_users
        self._count_dropped_events(drops, counted, stats)
        return self._finish_builtin(accounts, stats)

    def _event_drop_counts(
        self, conn: Connection, events: TableColumns, windows: _Windows
    ) -> dict[str, int]:
        """The one-row drop counts of ``_dropped_events_query``, as integers by name."""
        row = conn.execute(self._dropped_events_query(events, windows)).one()
        return {str(name): int(count or 0) for name, count in row._mapping.items()}

    @staticmethod
    def _count_dropped_events(
        drops: Mapping[str, int], counted: int, stats: UsageReadStats
    ) -> None:
        """Record the drops; ``unknown_user`` is what the join to users left out.

        The grouped query counts the in-window events of the users it reads; every other
        in-window event (a user id with no users row, a workspace that does not match, a user
        created at or after ``as_of``) was dropped by the join. Folding the anti-join into the
        existing pre-aggregation this way costs no second pass over the events; it is exact
        when (user_id[, workspace_id]) is unique in users, as the contract has it, and never
        negative (a duplicated user, or rows written between the two statements on a
        warehouse without snapshot reads).
        """
        for reason in ("no_time", "future", "no_user", "no_name"):
            stats.drop_events(reason, drops[reason])
        stats.drop_events("unknown_user", max(0, drops["in_window"] - counted))

    def _finish_builtin(
        self, accounts: Mapping[str, _Account], stats: UsageReadStats
    ) -> list[ProductAccount]:
        out: list[ProductAccount] = []
        by_workspace = self.account_level == "workspace"
        n_core = _mask_count(len(self.taxonomy.core))
        for key in sorted(accounts):
            account = accounts[key]
            if by_workspace:
                domain = min(account.domain_users.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                workspace_id: str | None = key.removeprefix("workspace:")
            else:
                domain = key
                workspace_id = None
            # Unpacked in _COUNT_COLUMNS order: this runs once per account (100k+).
            (
                total_users,
                active_7d,
                active_28d,
                new_7d,
                new_usual,
                events_7d,
                events_usual,
                events_28d,
                events_prev_28d,
                admin_changes,
                legal_views,
                pricing_views,
                admins,
            ) = [float(v or 0) for v in account.counts]
            flags = [int(v or 0).bit_count() for v in account.flags]
            metrics = {
                "total_users": total_users,
                "active_users_7d": active_7d,
                "active_users_28d": active_28d,
                "new_users_7d": new_7d,
                "usual_weekly_new_users": new_usual / _USUAL_WEEKS,
                "events_7d": events_7d,
                "usual_weekly_events": events_usual / _USUAL_WEEKS,
                "events_28d": events_28d,
                "events_prev_28d": events_prev_28d,
                "core_features_28d": float(sum(flags[:n_core])),
                "enterprise_features_28d": float(sum(flags[n_core:])),
                "admin_changes_28d": admin_changes,
                "legal_page_views_14d": legal_views,
                "pricing_page_views_14d": pricing_views,
                "admins": admins,
            }
            stats.users += account.users
            out.append(
                ProductAccount(
                    key=key,
                    domain=domain,
                    metrics=metrics,
                    first_seen=account.first_seen,
                    workspace_id=workspace_id,
                    hosts=tuple(sorted(account.hosts)),
                )
            )
        return out

    # -- custom model --------------------------------------------------------------------------

    def _model_sql(self) -> str:
        """The custom model's SQL text; ``WarehouseError`` when the file cannot be read."""
        assert self.model_path is not None
        try:
            return self.model_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WarehouseError(
                f"cannot read the model SQL file {self.model_path}: "
                f"{exc.strerror or exc}: check warehouse.model"
            ) from None
        except UnicodeDecodeError:
            raise WarehouseError(
                f"the model SQL file {self.model_path} is not UTF-8 text: save it as UTF-8"
            ) from None

    def _model_statement(self, sql: str, windows: _Windows) -> sa.TextClause:
        """``sql`` with the window parameters it uses bound; unknown parameters are refused."""
        values = {"as_of": windows.as_of, **{f"since_{w}": s for w, s in windows.since.items()}}
        used = list(dict.fromkeys(_BIND_PARAM.findall(sql)))
        unknown = [name for name in used if name not in values]
        if unknown:
            raise WarehouseError(
                f"model {self.model_path} uses unknown parameter(s) "
                f"{', '.join(':' + n for n in unknown)}; available: "
                f"{', '.join(':' + n for n in CUSTOM_MODEL_PARAMETERS)}"
            )
        params = [
            sa.bindparam(name, values[name].replace(tzinfo=None), sa.DateTime()) for name in used
        ]
        return sa.text(sql).bindparams(*params)

    def _custom_statement(self, windows: _Windows) -> sa.TextClause:
        return self._model_statement(self._model_sql(), windows)

    def _missing_model_columns(self, keys: Sequence[str]) -> str | None:
        """What is wrong when the model's result lacks ``domain`` (or ``workspace_id``)."""
        lower = [k.lower() for k in keys]
        needed = ["domain", *(["workspace_id"] if self.account_level == "workspace" else [])]
        missing = [c for c in needed if c not in lower]
        if not missing:
            return None
        return (
            f"model {self.model_path} must return column(s) {', '.join(needed)}; "
            f"missing: {', '.join(missing)} (it returns: {', '.join(keys) or 'nothing'}): "
            "add them to its SELECT"
        )

    def _read_custom(
        self, conn: Connection, windows: _Windows, stats: UsageReadStats
    ) -> list[ProductAccount]:
        statement = self._custom_statement(windows)
        result = conn.execution_options(stream_results=True, yield_per=self.chunk_size).execute(
            statement
        )
        keys = [str(k) for k in result.keys()]  # noqa: SIM118 - a Result, not a dict
        lower = [k.lower() for k in keys]
        by_workspace = self.account_level == "workspace"
        missing = self._missing_model_columns(keys)
        if missing:
            raise WarehouseError(missing)
        index = {name: i for i, name in enumerate(lower)}
        metric_columns = [
            (k, i)
            for i, k in enumerate(keys)
            if lower[i] not in ("domain", "workspace_id", "first_seen")
        ]
        metric_names = [name for name, _ in metric_columns]
        users_at = next((i for name, i in metric_columns if name == "total_users"), None)
        accounts: dict[str, _Account] = {}
        domains: dict[str, str] = {}
        for partition in result.partitions():
            for row in partition:
                stats.rows_read += 1
                # Skips are counted in users; a row without a user count stands for one.
                n_users = 1 if users_at is None else _row_users(row[users_at])
                try:
                    values = [_metric(row[i]) for _, i in metric_columns]
                except _NotANumber:
                    stats.skip("bad_metric", users=n_users)
                    continue
                raw_domain = row[index["domain"]]
                verdict = classify_host(str(raw_domain).strip()) if raw_domain is not None else None
                if verdict is None or verdict.reason is not None or verdict.domain is None:
                    stats.skip(
                        verdict.reason if verdict and verdict.reason else "invalid", users=n_users
                    )
                    continue
                if by_workspace:
                    ws = row[index["workspace_id"]]
                    if ws is None:
                        stats.skip("no_workspace", users=n_users)
                        continue
                    key = f"workspace:{ws}"
                else:
                    key = verdict.domain
                first_seen = (
                    _to_datetime(row[index["first_seen"]]) if "first_seen" in index else None
                )
                account = accounts.get(key)
                if account is None:
                    account = accounts[key] = _Account(values, [], first_seen)
                    domains[key] = verdict.domain
                else:
                    account.merge(values, [], first_seen)
                account.users += n_users
                account.hosts.add(verdict.domain)
        out: list[ProductAccount] = []
        for key in sorted(accounts):
            account = accounts[key]
            stats.users += account.users
            out.append(
                ProductAccount(
                    key=key,
                    domain=domains[key],
                    metrics=dict(zip(metric_names, account.counts, strict=True)),
                    first_seen=account.first_seen,
                    workspace_id=key.removeprefix("workspace:") if by_workspace else None,
                    hosts=tuple(sorted(account.hosts)),
                )
            )
        return out
