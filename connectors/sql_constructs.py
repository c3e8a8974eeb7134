"""Small SQL constructs whose text differs by dialect, compiled with SQLAlchemy's ``@compiles``.

The warehouse query is portable SQLAlchemy Core; the few places where dialects disagree live here:

* ``email_host(col)``: the host of an email, the same text on every dialect. Surrounding spaces
  (U+0020 only: every dialect's ``trim(x, ' ')`` agrees on them, while a bare ``TRIM`` differs)
  are removed; then a value with exactly one ``'@'``, something before it, something after it and
  no space anywhere has host = the text after the ``'@'``. Anything else (no ``'@'``, two or
  more, an empty local part or host, a space inside, NULL) is ``''``: the junk host, counted as
  skipped. The test is plain ``LIKE`` on every dialect; only the cutting function differs. The
  host is *not* lower-cased here: SQLite's ``lower()`` folds ASCII only and Postgres's depends on
  the database's ``LC_CTYPE``, so the reader lower-cases in Python (which also makes rows group
  the same way everywhere).
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
    """``email_host(col)``: the text after the only ``'@'`` of a well-formed email, else ``''``.

    Not lower-cased: the reader folds case in Python (see the module docstring).
    """

    type = String()
    name = "email_host"
    inherit_cache = True


def _email_host_sql(compiler: SQLCompiler, trimmed: str, host_of: str) -> str:
    """The portable shape of ``email_host``: LIKE patterns decide, a dialect function cuts.

    ``trimmed`` is the email with surrounding spaces removed; ``host_of`` is the text after the
    ``'@'`` of ``trimmed``, spelled with the dialect's functions (it only runs on a value that
    holds exactly one ``'@'``). NULL fails every LIKE, so it becomes ``''`` too. The patterns
    are rendered by the dialect, which doubles ``%`` for drivers whose placeholders use it.
    """

    def text(value: str) -> str:
        return str(compiler.render_literal_value(value, String()))

    return (
        f"CASE WHEN {trimmed} LIKE {text('_%@_%')} AND {trimmed} NOT LIKE {text('%@%@%')} "
        f"AND {trimmed} NOT LIKE {text('% %')} THEN {host_of} ELSE '' END"
    )


@compiles(email_host)
def _email_host_default(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    trimmed = f"trim({arg}, ' ')"
    return _email_host_sql(compiler, trimmed, f"substr({trimmed}, instr({trimmed}, '@') + 1)")


@compiles(email_host, "postgresql")
@compiles(email_host, "redshift")
def _email_host_btrim(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    trimmed = f"btrim({arg}, ' ')"
    return _email_host_sql(compiler, trimmed, f"split_part({trimmed}, '@', 2)")


@compiles(email_host, "duckdb")
@compiles(email_host, "snowflake")
def _email_host_trim(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    trimmed = f"trim({arg}, ' ')"
    return _email_host_sql(compiler, trimmed, f"split_part({trimmed}, '@', 2)")


@compiles(email_host, "bigquery")
def _email_host_bigquery(element: email_host, compiler: SQLCompiler, **kw: Any) -> str:
    arg = compiler.process(element.clauses, **kw)
    trimmed = f"TRIM({arg}, ' ')"
    return _email_host_sql(compiler, trimmed, f"SPLIT({trimmed}, '@')[SAFE_OFFSET(1)]")


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
