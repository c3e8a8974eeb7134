"""Small SQL constructs whose text differs by dialect, compiled with SQLAlchemy's ``@compiles``.

The warehouse query is portable SQLAlchemy Core; the few places where dialects disagree live here:

* ``email_host(col)``: the lower-cased part of an email after ``'@'``; ``''`` (never a host) when
  there is no ``'@'`` or no email, so such rows group under one junk host, counted as skipped.
* ``comparable_ts(expr)``: a timestamp in a form that compares correctly with a bound window
  bound. Only SQLite needs help: it stores timestamps as text in more than one layout
  (``'2024-05-01 10:00:00'``, ``'2024-05-01T10:00:00.5'``, with an offset...), which text comparison
  gets wrong, so both sides are normalised with ``strftime``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import DateTime, String

__all__ = ["comparable_ts", "email_host"]


class email_host(FunctionElement[str]):  # noqa: N801 - reads like the SQL function it renders
    """``email_host(col)``: lower-case email host (text after the ``'@'``), ``''`` without one."""

    type = String()
    name = "email_host"
    inherit_cache = True


@compiles(email_host)
def _email_host_default(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return (
        f"CASE WHEN instr({arg}, '@') > 0 "
        f"THEN lower(substr({arg}, instr({arg}, '@') + 1)) ELSE '' END"
    )


@compiles(email_host, "postgresql")
@compiles(email_host, "duckdb")
@compiles(email_host, "snowflake")
@compiles(email_host, "redshift")
def _email_host_split_part(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"lower(split_part(coalesce({arg}, ''), '@', 2))"


@compiles(email_host, "bigquery")
def _email_host_bigquery(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"COALESCE(LOWER(SPLIT({arg}, '@')[SAFE_OFFSET(1)]), '')"


class comparable_ts(FunctionElement[Any]):  # noqa: N801 - reads like the SQL function it renders
    """A timestamp expression made safe to compare with ``<`` / ``>=`` on every dialect."""

    type = DateTime()
    name = "comparable_ts"
    inherit_cache = True


@compiles(comparable_ts)
def _comparable_ts_default(element: comparable_ts, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(comparable_ts, "sqlite")
def _comparable_ts_sqlite(element: comparable_ts, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f', {arg})"
