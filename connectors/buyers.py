"""Buyer candidates from the warehouse: users whose profile or behaviour may mark a buyer.

One query, filtered and aggregated in the warehouse (DESIGN.md section 2):

1. each user's buyer events (legal pages in the last 14 days, admin changes in the last 28,
   pricing pages in the last 14) are counted with ``GROUP BY user_id``, the taxonomy's event
   names bound as ``IN`` lists, the windows half-open ``[as_of - N days, as_of)``;
2. users are joined to those counts and kept only when they could be a buyer under the persona
   model (``pls_sync.channels.score_user``): they match a rule's profile criteria
   (``seniority`` / ``department`` in the rule's values, compared without case, spaces, ``-``
   and ``_``; ``lower(title) LIKE`` the rule's globs; a numeric ``company_size >= n``) and,
   for a rule worth less than ``min_buyer_score``, carry enough behaviour points to reach it;
   or their behaviour points alone reach it. Being admin is not a buyer tell (whoever creates
   a workspace is its admin); *becoming* admin is.

Python sees the candidates only, never every user. The filter is a superset of the persona
rules: a title glob matches a run of words anywhere in the title, so it becomes
``%glob%`` (``*`` -> ``%``, ``?`` -> ``_``, a ``[...]`` class -> ``_``, ``%`` / ``_`` / ``\\``
escaped), and text company sizes (``"51-200"``) are left to the core, which decides who is a
buyer. Every value is a bound parameter; table and column names come from reflection.
Works on every dialect the usage reader works on (DuckDB, SQLite, Postgres...).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from connectors.sql_constructs import comparable_ts
from connectors.warehouse import SqlUsageSource
from pls_sync.channels import (
    BuyerBehaviour,
    PersonaModel,
    PersonaRule,
    UserProfile,
    persona_columns,
)
from pls_sync.domains import classify_host, email_host
from pls_sync.errors import WarehouseError
from pls_sync.models import UsageReadStats

__all__ = ["glob_to_like", "read_buyer_candidates", "title_like"]

LEGAL_DAYS = 14
ADMIN_DAYS = 28
PRICING_DAYS = 14
_LIKE_ESCAPE = "\\"
_PROFILE_COLUMNS = ("title", "seniority", "department", "company_size")
_VOCAB_DROPPED = (" ", "-", "_", "\t")
_NUMERIC_TYPES = (sa.Integer, sa.Numeric, sa.Float)
_TRUE_STRINGS = ("true", "t", "1", "yes", "y")


@dataclass(frozen=True, slots=True)
class _BuyerEvents:
    """The event names of the three buyer behaviours."""

    legal: tuple[str, ...]
    admin: tuple[str, ...]
    pricing: tuple[str, ...]


def _names(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(dict.fromkeys(str(v) for v in values))


def _buyer_events(taxonomy: Any) -> _BuyerEvents:
    """From a category mapping (``legal_page_view: [...]``) or the usage reader's taxonomy."""
    if isinstance(taxonomy, Mapping):
        return _BuyerEvents(
            legal=_names(taxonomy.get("legal_page_view")),
            admin=_names(taxonomy.get("admin_change")),
            pricing=_names(taxonomy.get("pricing_page_view")),
        )
    return _BuyerEvents(
        legal=_names(getattr(taxonomy, "legal", ())),
        admin=_names(getattr(taxonomy, "admin", ())),
        pricing=_names(getattr(taxonomy, "pricing", ())),
    )


def glob_to_like(pattern: str) -> str:
    """A lower-case SQL LIKE pattern (escape ``\\``) matching at least what the glob matches.

    ``*`` -> ``%``, ``?`` -> ``_``; ``%``, ``_`` and ``\\`` are escaped so they match
    themselves; an fnmatch character class (``[abc]``) becomes ``_``, one any character,
    which LIKE cannot narrow further.
    """
    out: list[str] = []
    text = pattern.lower()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char == "[" and (end := _class_end(text, i)) is not None:
            out.append("_")
            i = end
        elif char in ("%", "_", _LIKE_ESCAPE):
            out.append(_LIKE_ESCAPE + char)
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _class_end(text: str, start: int) -> int | None:
    """The index of the ``]`` closing an fnmatch class opened at ``start``, or None."""
    i = start + 1
    if i < len(text) and text[i] == "!":
        i += 1
    if i < len(text) and text[i] == "]":
        i += 1
    end = text.find("]", i)
    return end if end >= 0 else None


def title_like(pattern: str) -> str:
    """The LIKE pattern for a persona title glob: it may match any run of words of a title.

    ``%`` around the glob's LIKE form, and every run of spaces inside it a ``%``, because the
    title's words may be separated by commas, slashes or several spaces.
    """
    words = pattern.strip().split()
    return "%" + "%".join(glob_to_like(word) for word in words) + "%"


def _squeezed(value: str) -> str:
    """A vocabulary value without case, spaces, ``-`` or ``_`` (as ``_squeeze`` in SQL)."""
    return "".join(char for char in str(value).lower() if char not in _VOCAB_DROPPED)


def _squeeze(column: ColumnElement[Any]) -> ColumnElement[Any]:
    expr: ColumnElement[Any] = sa.func.lower(column)
    for char in _VOCAB_DROPPED:
        expr = sa.func.replace(expr, char, "")
    return expr


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_STRINGS
    return bool(value)


def _size_text(value: Any) -> str | None:
    """The company size as the core reads it: text (``"51-200"``), a number as its digits."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return _text(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class _Query:
    """The candidate query for one persona model, windows and reflected tables."""

    def __init__(
        self,
        source: SqlUsageSource,
        users: Any,
        events: Any,
        persona: PersonaModel,
        buyer_events: _BuyerEvents,
        as_of: datetime,
    ):
        self.source = source
        self.users = users
        self.events = events
        self.persona = persona
        self.buyer_events = buyer_events
        self.as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
        self.by_workspace = source.account_level == "workspace"

    def _bound(self, name: str, value: datetime, tz: bool) -> ColumnElement[Any]:
        value = value if tz else value.replace(tzinfo=None)
        return comparable_ts(sa.bindparam(name, value, sa.DateTime(tz)))

    def _profile_column(self, u: sa.TableClause, name: str) -> ColumnElement[Any]:
        if name in self.users.names:
            return u.c[self.users.names[name]]
        return sa.null()

    def _rule_condition(self, rule: PersonaRule, u: sa.TableClause) -> ColumnElement[bool] | None:
        """A superset of the rule's profile criteria, ANDed; ``None`` for a rule with none.

        The core compares vocabulary ignoring case, spaces, ``-`` and ``_``: both sides are
        compared with those removed. A title pattern matches a run of whole words anywhere in
        the title: it becomes ``%pattern%`` with each space a ``%`` (any separators).
        """
        parts: list[ColumnElement[bool]] = []
        seniority = sorted({_squeezed(s) for s in rule.seniority_in if _squeezed(s)})
        if seniority:
            parts.append(_squeeze(self._profile_column(u, "seniority")).in_(seniority))
        departments = sorted({_squeezed(d) for d in rule.department_in if _squeezed(d)})
        if departments:
            parts.append(_squeeze(self._profile_column(u, "department")).in_(departments))
        patterns = sorted({title_like(str(p)) for p in rule.title_patterns if str(p).strip()})
        if patterns:
            title = sa.func.lower(self._profile_column(u, "title"))
            parts.append(sa.or_(*(title.like(p, escape=_LIKE_ESCAPE) for p in patterns)))
        size_type = self.users.types.get("company_size")
        if rule.min_company_size is not None and isinstance(size_type, _NUMERIC_TYPES):
            # Text sizes ("51-200") are parsed by the core; only numeric ones narrow here.
            parts.append(self._profile_column(u, "company_size") >= rule.min_company_size)
        if not parts:
            return None
        return sa.and_(*parts)

    def build(self) -> sa.Select[Any]:
        source = self.source
        extra = ("workspace_id",) if self.by_workspace else ()
        present = tuple(c for c in _PROFILE_COLUMNS if c in self.users.names)
        u = self.users.table_clause(
            source.schema, ("user_id", "email", "created_at", "is_admin", *present, *extra)
        )
        e = self.events.table_clause(source.schema, ("user_id", "event_name", "occurred_at"))
        tz_events = self.events.is_tz_aware("occurred_at")
        tz_users = self.users.is_tz_aware("created_at")
        as_of_ev = self._bound("ev_as_of", self.as_of, tz_events)
        since = {
            days: self._bound(f"ev_since_{days}d", self.as_of - timedelta(days=days), tz_events)
            for days in {LEGAL_DAYS, ADMIN_DAYS, PRICING_DAYS}
        }
        t = comparable_ts(e.c.occurred_at)
        name = e.c.event_name
        events = self.buyer_events

        def count(names: tuple[str, ...], days: int) -> ColumnElement[Any]:
            if not names:
                return sa.literal_column("0")
            return sa.func.sum(sa.case((sa.and_(t >= since[days], name.in_(names)), 1), else_=0))

        wanted = tuple(dict.fromkeys((*events.legal, *events.admin, *events.pricing)))
        conditions: list[ColumnElement[bool]] = []
        columns: list[ColumnElement[Any]] = [
            u.c.user_id.label("user_id"),
            u.c.email.label("email"),
            *(
                (sa.type_coerce(u.c.workspace_id, sa.types.NullType()).label("workspace_id"),)
                if self.by_workspace
                else ()
            ),
            *(self._profile_column(u, c).label(c) for c in _PROFILE_COLUMNS),
            u.c.is_admin.label("is_admin"),
        ]
        joined: sa.FromClause = u
        if wanted:
            widest = max(
                days
                for days, names in (
                    (LEGAL_DAYS, events.legal),
                    (ADMIN_DAYS, events.admin),
                    (PRICING_DAYS, events.pricing),
                )
                if names
            )
            per_user = (
                sa.select(
                    e.c.user_id,
                    count(events.legal, LEGAL_DAYS).label("legal_views"),
                    count(events.admin, ADMIN_DAYS).label("admin_changes"),
                    count(events.pricing, PRICING_DAYS).label("pricing_views"),
                )
                .where(t >= since[widest], t < as_of_ev, name.in_(wanted))
                .group_by(e.c.user_id)
                .subquery("buyer_events")
            )
            joined = u.outerjoin(per_user, per_user.c.user_id == u.c.user_id)
            behaviour = {
                "legal_page_views": sa.func.coalesce(per_user.c.legal_views, 0),
                "became_admin": sa.func.coalesce(per_user.c.admin_changes, 0),
                "pricing_page_views": sa.func.coalesce(per_user.c.pricing_views, 0),
            }
            columns += [column.label(label) for label, column in behaviour.items()]
            points = self.persona.behaviour_points
            earned = [
                sa.case((behaviour[label] > 0, sa.literal(float(value))), else_=sa.literal(0.0))
                for label, value in (
                    ("legal_page_views", points.legal_page_view),
                    ("became_admin", points.became_admin),
                    ("pricing_page_views", points.pricing_page_view),
                )
                if value > 0
            ]
            behaviour_score: ColumnElement[Any] | None = None
            for term in earned:
                behaviour_score = term if behaviour_score is None else behaviour_score + term
            any_behaviour = sa.or_(*(column > 0 for column in behaviour.values()))
        else:
            columns += [
                sa.literal_column("0").label(label)
                for label in ("legal_page_views", "became_admin", "pricing_page_views")
            ]
            behaviour_score = None
            any_behaviour = sa.false()
        minimum = float(self.persona.min_buyer_score)
        # A buyer is marked by a rule or a behaviour and reaches the minimum score with the
        # best rule it matches plus its behaviour points (pls_sync.channels.score_user).
        if behaviour_score is not None:
            conditions.append(sa.and_(any_behaviour, behaviour_score >= minimum))
        for rule in self.persona.rules:
            condition = self._rule_condition(rule, u)
            if condition is None:
                condition = sa.true()
            if rule.points < minimum:
                if behaviour_score is None:
                    continue
                condition = sa.and_(condition, behaviour_score >= minimum - float(rule.points))
            conditions.append(condition)
        created = comparable_ts(u.c.created_at)
        started = sa.or_(
            u.c.created_at.is_(None),
            created < self._bound("u_as_of", self.as_of, tz_users),
        )
        where = sa.or_(*conditions) if conditions else sa.false()
        return sa.select(*columns).select_from(joined).where(started, where).order_by(u.c.user_id)


def _required_columns(persona: PersonaModel, by_workspace: bool) -> dict[str, tuple[str, ...]]:
    workspace = ("workspace_id",) if by_workspace else ()
    profile = tuple(sorted(persona_columns(persona.rules)))
    return {
        "users": ("user_id", "email", "created_at", "is_admin", *profile, *workspace),
        "events": ("user_id", "event_name", "occurred_at"),
    }


def _source(
    engine_or_source: Engine | SqlUsageSource,
    taxonomy: Any,
    account_level: str,
    users_table: str,
    events_table: str,
    schema: str | None,
) -> SqlUsageSource:
    if isinstance(engine_or_source, SqlUsageSource):
        return engine_or_source
    if not isinstance(engine_or_source, Engine):
        raise TypeError("read_buyer_candidates needs a SQLAlchemy Engine or a SqlUsageSource")
    return SqlUsageSource(
        "",
        engine=engine_or_source,
        taxonomy=taxonomy if isinstance(taxonomy, Mapping) else {},
        account_level=account_level,
        schema=schema,
        users_table=users_table,
        events_table=events_table,
    )


def read_buyer_candidates(
    engine_or_source: Engine | SqlUsageSource,
    *,
    as_of: datetime,
    taxonomy: Mapping[str, Sequence[str]] | None,
    persona: PersonaModel,
    account_level: str = "company",
    users_table: str = "users",
    events_table: str = "events",
    schema: str | None = None,
    stats: UsageReadStats | None = None,
) -> Iterator[tuple[str, UserProfile]]:
    """Yield ``(account key, profile)`` for each user who could be a buyer, as of ``as_of``.

    Candidates are filtered in the warehouse (see the module docstring). The account key is the
    registrable domain of the email at the company level (free-mail, disposable and junk
    addresses are skipped, counted in ``stats`` when given) and ``workspace:<id>`` at the
    workspace level. Users created at or after ``as_of`` are left out.

    ``engine_or_source`` is an Engine (the table, schema and level arguments apply) or a
    ``SqlUsageSource`` (its engine, schema, tables and level apply; ``taxonomy`` may then be
    ``None`` to use its event taxonomy). Raises ``WarehouseError`` when the warehouse cannot be
    read or lacks a table or a column the persona model needs.
    """
    source = _source(engine_or_source, taxonomy, account_level, users_table, events_table, schema)
    buyer_events = _buyer_events(taxonomy if taxonomy is not None else source.taxonomy)
    by_workspace = source.account_level == "workspace"
    engine, owned = source.connect_engine()
    try:
        with engine.connect() as conn:
            source.begin_read(conn, owned)
            tables = {}
            problems: list[str] = []
            for kind, table in (("users", source.users_table), ("events", source.events_table)):
                reflected = source.reflect(conn, table)
                if reflected is None:
                    problems.append(f"table {table!r} not found")
                    continue
                tables[kind] = reflected
                needed = _required_columns(persona, by_workspace)[kind]
                missing = [c for c in needed if c not in reflected.names]
                if missing:
                    problems.append(f"table {table!r} is missing column(s): {', '.join(missing)}")
            if problems:
                raise WarehouseError(
                    f"cannot read buyer candidates from {source.describe()}: " + "; ".join(problems)
                )
            query = _Query(
                source, tables["users"], tables["events"], persona, buyer_events, as_of
            ).build()
            result = conn.execution_options(
                stream_results=True, yield_per=source.chunk_size
            ).execute(query)
            for partition in result.partitions():
                for row in partition:
                    keyed = _account_key(row, by_workspace, stats)
                    if keyed is not None:
                        yield keyed, _profile(row)
    except WarehouseError:
        raise
    except DBAPIError as exc:
        original = str(exc.orig) if exc.orig is not None else str(exc)
        raise WarehouseError(
            source.redact_secrets(f"buyer query failed on {source.describe()}: {original}")
        ) from None
    except SQLAlchemyError as exc:
        raise WarehouseError(
            source.redact_secrets(f"cannot read buyers from {source.describe()}: {exc}")
        ) from None
    finally:
        if owned:
            engine.dispose()


def _account_key(row: Any, by_workspace: bool, stats: UsageReadStats | None) -> str | None:
    if by_workspace:
        workspace = row.workspace_id
        if workspace is None or str(workspace) == "":
            if stats is not None:
                stats.skip("no_workspace")
            return None
        return f"workspace:{workspace}"
    host = email_host(row.email) if isinstance(row.email, str) else None
    verdict = classify_host(host) if host else None
    if verdict is None or verdict.reason is not None or verdict.domain is None:
        if stats is not None:
            stats.skip(verdict.reason if verdict and verdict.reason else "invalid")
        return None
    return verdict.domain


def _profile(row: Any) -> UserProfile:
    return UserProfile(
        user_id=str(row.user_id),
        email=str(row.email or ""),
        title=_text(row.title),
        seniority=_text(row.seniority),
        department=_text(row.department),
        company_size=_size_text(row.company_size),
        is_admin=_flag(row.is_admin),
        behaviour=BuyerBehaviour(
            legal_page_views=int(row.legal_page_views or 0),
            became_admin=int(row.became_admin or 0) > 0,
            pricing_page_views=int(row.pricing_page_views or 0),
        ),
    )
