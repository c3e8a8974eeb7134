"""The warehouse reader: usage aggregates per product account, computed in the warehouse.

``SqlUsageSource`` implements ``pls_sync.ports.UsageSource`` over any SQLAlchemy URL (DuckDB,
SQLite, Postgres; Snowflake, BigQuery... through their dialects).

The built-in model reads ``users`` and ``events`` (DESIGN.md section 2) with one query:

1. events of the last 63 days (names under ``ignored`` left out) are pre-aggregated per user with
   conditional aggregates over the time windows;
2. they are joined to users and grouped by email host (and workspace at the workspace level).

Python then sees one row per host, not per event: it classifies each host once (free mail,
disposable and junk hosts are skipped and counted) and merges hosts sharing a registrable domain
(``eng.acme.co.uk`` + ``acme.co.uk``): counts sum, feature flags OR, ``first_seen`` is the minimum.
Distinct-feature counts do not sum across hosts, hence one 0/1 column per configured feature.

Time windows are computed in Python from ``as_of`` and bound as parameters, half-open
``[as_of - N days, as_of)``; event names are bound values, never SQL text. Timestamps without a
time zone are taken as UTC. The query runs read-only where the dialect allows and streams its
rows in chunks.

A custom model is a SQL file returning one row per account: ``domain`` (plus ``workspace_id`` at
the workspace level), numeric metric columns and optionally ``first_seen``. It may use the bind
parameters ``:as_of``, ``:since_7d``, ``:since_14d``, ``:since_28d``, ``:since_56d`` and
``:since_63d`` (naive UTC timestamps).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
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
from pls_sync.models import BUILTIN_METRICS, ProductAccount, UsageReadStats

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
    # workspace level: users per usable registrable domain, and per skip reason otherwise
    domain_users: dict[str, int] = field(default_factory=dict)
    unusable_users: dict[str, int] = field(default_factory=dict)

    def merge(
        self, counts: Sequence[Any], flags: Sequence[Any], first_seen: datetime | None
    ) -> None:
        """Fold another row of the same account in (rare: most accounts are one row)."""
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.flags = [int(a or 0) | int(b or 0) for a, b in zip(self.flags, flags, strict=True)]
        if first_seen is not None and (self.first_seen is None or first_seen < self.first_seen):
            self.first_seen = first_seen


def _mask_count(features: int) -> int:
    """Bitmask columns needed for ``features`` feature flags."""
    return -(-features // _MASK_BITS)


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


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


def _number(value: Any) -> float | None:
    """A metric value as a finite float; ``None`` when it is not a number. NULL counts as 0."""
    if value is None:
        return 0.0
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


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
        self._engine = engine
        self._url: URL | None = None
        if engine is None:
            try:
                self._url = make_url(url)
                self._url.get_dialect()
            except NoSuchModuleError as exc:
                raise WarehouseError(
                    f"no SQLAlchemy dialect installed for warehouse URL {self._safe_url(url)}: "
                    f"{exc} (install the dialect's package, e.g. snowflake-sqlalchemy)"
                ) from None
            except (ArgumentError, ValueError) as exc:
                raise WarehouseError(
                    f"invalid warehouse URL {self._safe_url(url)}: {self.redact_secrets(str(exc))}"
                ) from None

    # -- public -------------------------------------------------------------------------------

    def read_accounts(self, as_of: datetime, stats: UsageReadStats) -> Iterator[ProductAccount]:
        """Yield one account per company (or workspace) as of ``as_of``, sorted by key.

        Rows read, users counted and skips (with reasons) go into ``stats``. Raises
        ``WarehouseError`` when the warehouse is unreachable or lacks a table or column.
        """
        windows = _Windows.at(as_of)
        accounts = self._collect(windows, stats)
        stats.accounts += len(accounts)
        yield from accounts

    def describe(self) -> str:
        """The warehouse URL without its password, for logs and reports."""
        if self._url is not None:
            return self._url.render_as_string(hide_password=True)
        assert self._engine is not None
        return self._engine.url.render_as_string(hide_password=True)

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
        return self._builtin_query(users, events, _Windows.at(as_of))

    # -- engine and connection ----------------------------------------------------------------

    def _secrets(self) -> list[str]:
        url = self._url if self._url is not None else (self._engine.url if self._engine else None)
        return [url.password] if url is not None and url.password else []

    def redact_secrets(self, text: str) -> str:
        """``text`` with the warehouse URL's password masked."""
        return redact(text, self._secrets())

    def _safe_url(self, url: str) -> str:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:
            return redact(url)

    def connect_engine(self) -> tuple[Engine, bool]:
        """The engine to read with and whether it is ours (disposed after the read)."""
        if self._engine is not None:
            return self._engine, False
        assert self._url is not None
        url = self._url
        backend = url.get_backend_name()
        database = url.database or ""
        kwargs: dict[str, Any] = {}
        if backend in ("sqlite", "duckdb"):
            # Never keep the file (and DuckDB's lock on it) open between runs.
            kwargs["poolclass"] = NullPool
            is_file = database not in ("", ":memory:") and not database.startswith(
                (":memory:", "file:", "md:", "motherduck:")
            )
            if is_file:
                path = Path(database)
                if not path.is_file():
                    raise WarehouseError(f"warehouse file not found: {path}")
                if backend == "sqlite":
                    url = url.set(
                        database=f"file:{path.resolve()}",
                        query={**url.query, "mode": "ro", "uri": "true"},
                    )
                else:
                    kwargs["connect_args"] = {"read_only": True}
        elif (
            backend == "postgresql"
            and "connect_timeout" not in url.query
            and url.get_driver_name() in ("psycopg", "psycopg2")
        ):
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            return sa.create_engine(url, **kwargs), True
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise WarehouseError(
                f"cannot open warehouse {self.describe()}: {self.redact_secrets(str(exc))}"
            ) from None

    def begin_read(self, conn: Connection, owned: bool) -> None:
        """Make the transaction read-only and UTC where the dialect allows it."""
        name = conn.dialect.name
        if name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
        elif name == "duckdb":
            conn.exec_driver_sql("SET enable_progress_bar = false")  # it would print to stdout
            if owned:
                conn.exec_driver_sql("SET TimeZone = 'UTC'")

    def _collect(self, windows: _Windows, stats: UsageReadStats) -> list[ProductAccount]:
        engine, owned = self.connect_engine()
        try:
            with engine.connect() as conn:
                self.begin_read(conn, owned)
                if self.model_path is not None:
                    return self._read_custom(conn, windows, stats)
                return self._read_builtin(conn, windows, stats)
        except WarehouseError:
            raise
        except DBAPIError as exc:
            original = str(exc.orig) if exc.orig is not None else str(exc)
            if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError):
                message = f"cannot read the warehouse {self.describe()}: {original}"
            else:
                message = f"warehouse query failed on {self.describe()}: {original}"
            raise WarehouseError(self.redact_secrets(message.strip())) from None
        except (SQLAlchemyError, OSError) as exc:
            raise WarehouseError(
                self.redact_secrets(f"cannot read the warehouse {self.describe()}: {exc}")
            ) from None
        finally:
            if owned:
                engine.dispose()

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
            conn.rollback()
            self.begin_read(conn, owned=False)
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

    def _check_tables(self, conn: Connection) -> tuple[TableColumns, TableColumns]:
        """Reflect both tables; report every missing table and column at once."""
        workspace = ("workspace_id",) if self.account_level == "workspace" else ()
        required = {
            self.users_table: (*_USER_COLUMNS, *workspace),
            self.events_table: (*_EVENT_COLUMNS, *workspace),
        }
        where = f" in schema {self.schema!r}" if self.schema else ""
        problems: list[str] = []
        found: dict[str, TableColumns] = {}
        for table, columns in required.items():
            reflected = self.reflect(conn, table)
            if reflected is None:
                problems.append(f"table {table!r} not found{where}")
                continue
            found[table] = reflected
            missing = [c for c in columns if c not in reflected.names]
            if missing:
                problems.append(f"table {table!r} is missing column(s): {', '.join(missing)}")
        if problems:
            raise WarehouseError(
                f"the warehouse {self.describe()} does not match the built-in model: "
                + "; ".join(problems)
            )
        return found[self.users_table], found[self.events_table]

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

        def bounds(prefix: str, tz: bool) -> dict[str, ColumnElement[Any]]:
            def param(name: str, value: datetime) -> ColumnElement[Any]:
                value = value if tz else value.replace(tzinfo=None)
                return comparable_ts(sa.bindparam(f"{prefix}_{name}", value, sa.DateTime(tz)))

            out = {w: param(f"since_{w}", since) for w, since in windows.since.items()}
            out["as_of"] = param("as_of", windows.as_of)
            return out

        eb = bounds("ev", events.is_tz_aware("occurred_at"))
        ub = bounds("u", users.is_tz_aware("created_at"))

        def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
            return sa.func.sum(sa.case((condition, 1), else_=0))

        def any_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
            return sa.func.max(sa.case((condition, 1), else_=0))

        def zero() -> ColumnElement[Any]:
            return sa.literal_column("0")

        t = comparable_ts(e.c.occurred_at)
        name = e.c.event_name

        def named(names: tuple[str, ...], since: str) -> ColumnElement[Any]:
            return count_if(sa.and_(t >= eb[since], name.in_(names))) if names else zero()

        feature_columns = [
            any_if(sa.and_(t >= eb["28d"], name == sa.bindparam(f"core_{i}", f))).label(f"core_{i}")
            for i, f in enumerate(tax.core)
        ] + [
            any_if(sa.and_(t >= eb["28d"], name == sa.bindparam(f"ent_{i}", f))).label(f"ent_{i}")
            for i, f in enumerate(tax.enterprise)
        ]
        event_filters = [t >= eb["63d"], t < eb["as_of"], name.is_not(None)]
        if tax.ignored:
            event_filters.append(name.not_in(tax.ignored))
        per_user = (
            sa.select(
                e.c.user_id,
                *((e.c.workspace_id,) if by_workspace else ()),
                count_if(t >= eb["7d"]).label("ev_7d"),
                count_if(sa.and_(t >= eb["63d"], t < eb["7d"])).label("ev_usual"),
                count_if(t >= eb["28d"]).label("ev_28d"),
                count_if(sa.and_(t >= eb["56d"], t < eb["28d"])).label("ev_prev_28d"),
                named(tax.legal, "14d").label("ev_legal"),
                named(tax.pricing, "14d").label("ev_pricing"),
                named(tax.admin, "28d").label("ev_admin"),
                *feature_columns,
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
                count_if(sa.func.coalesce(per_user.c.ev_7d, 0) > 0).label("active_users_7d"),
                count_if(sa.func.coalesce(per_user.c.ev_28d, 0) > 0).label("active_users_28d"),
                count_if(created >= ub["7d"]).label("new_users_7d"),
                count_if(sa.and_(created >= ub["63d"], created < ub["7d"])).label(
                    "new_users_usual"
                ),
                total("ev_7d").label("events_7d"),
                total("ev_usual").label("events_usual"),
                total("ev_28d").label("events_28d"),
                total("ev_prev_28d").label("events_prev_28d"),
                total("ev_admin").label("admin_changes_28d"),
                total("ev_legal").label("legal_page_views_14d"),
                total("ev_pricing").label("pricing_page_views_14d"),
                count_if(self._truthy(u.c.is_admin)).label("admins"),
                *self._feature_masks(per_user, "core", len(tax.core)),
                *self._feature_masks(per_user, "ent", len(tax.enterprise)),
                sa.type_coerce(sa.func.min(u.c.created_at), NullType()).label("first_seen"),
            )
            .select_from(u.outerjoin(per_user, join_on))
            .where(sa.or_(u.c.created_at.is_(None), created < ub["as_of"]))
            .group_by(*group)
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
        query = self._builtin_query(users, events, windows)
        by_workspace = self.account_level == "workspace"
        # Row layout: host, [workspace_id], _COUNT_COLUMNS..., feature flags..., first_seen.
        first = 2 if by_workspace else 1
        flags_at = first + len(_COUNT_COLUMNS)
        n_flags = _mask_count(len(self.taxonomy.core)) + _mask_count(len(self.taxonomy.enterprise))
        accounts: dict[str, _Account] = {}
        result = conn.execution_options(stream_results=True, yield_per=self.chunk_size).execute(
            query
        )
        # Per row: one memoised classify_host and a tuple slice; merging only on shared keys.
        for partition in result.partitions():
            stats.rows_read += len(partition)
            for row in partition:
                host = row[0].strip() if isinstance(row[0], str) else ""
                n_users = int(row[first])
                verdict = classify_host(host)
                domain = verdict.domain if verdict.reason is None else None
                if by_workspace:
                    if row[1] is None:
                        stats.skip("no_workspace", users=n_users)
                        continue
                    key = f"workspace:{row[1]}"
                elif domain is None:
                    stats.skip(verdict.reason or "invalid", users=n_users)
                    continue
                else:
                    key = domain
                counts = row[first:flags_at]
                flags = row[flags_at : flags_at + n_flags]
                first_seen = _to_datetime(row[-1])
                account = accounts.get(key)
                if account is None:
                    account = accounts[key] = _Account(list(counts), list(flags), first_seen)
                else:
                    account.merge(counts, flags, first_seen)
                account.users += n_users
                if domain is not None:
                    account.hosts.add(host)
                    account.domain_users[domain] = account.domain_users.get(domain, 0) + n_users
                else:
                    reason = verdict.reason or "invalid"
                    account.unusable_users[reason] = account.unusable_users.get(reason, 0) + n_users
        return self._finish_builtin(accounts, stats)

    def _finish_builtin(
        self, accounts: Mapping[str, _Account], stats: UsageReadStats
    ) -> list[ProductAccount]:
        out: list[ProductAccount] = []
        by_workspace = self.account_level == "workspace"
        n_core = _mask_count(len(self.taxonomy.core))
        for key in sorted(accounts):
            account = accounts[key]
            if by_workspace:
                if not account.domain_users:
                    # No member has a company address: the workspace cannot be matched.
                    reason = max(account.unusable_users.items(), key=lambda kv: (kv[1], kv[0]))[0]
                    stats.skip(reason, users=account.users)
                    continue
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

    def _custom_statement(self, windows: _Windows) -> sa.TextClause:
        assert self.model_path is not None
        try:
            sql = self.model_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise WarehouseError(
                f"cannot read the model SQL file {self.model_path}: {exc.strerror}"
            ) from None
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
        needed = ["domain", *(["workspace_id"] if by_workspace else [])]
        missing = [c for c in needed if c not in lower]
        if missing:
            raise WarehouseError(
                f"model {self.model_path} must return column(s) {', '.join(needed)}; "
                f"missing: {', '.join(missing)} (it returned: {', '.join(keys)})"
            )
        index = {name: i for i, name in enumerate(lower)}
        metric_columns = [
            (k, i)
            for i, k in enumerate(keys)
            if lower[i] not in ("domain", "workspace_id", "first_seen")
        ]
        metric_names = [name for name, _ in metric_columns]
        accounts: dict[str, _Account] = {}
        domains: dict[str, str] = {}
        for partition in result.partitions():
            for row in partition:
                stats.rows_read += 1
                metrics: dict[str, float] = {}
                for name, i in metric_columns:
                    number = _number(row[i])
                    if number is None:
                        break
                    metrics[name] = number
                # Skips are counted in users; a row without a user count stands for one.
                n_users = int(metrics.get("total_users", 1.0))
                if len(metrics) != len(metric_columns):
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
                values = list(metrics.values())
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
