"""A SOQL subset: tokenizer, parser and evaluator, enough for the sandbox's query endpoint.

Covers what pls-sync and its tests send: a field list (with parent relationship paths such as
``Owner.Name``) or ``COUNT()``, ``FROM``, ``WHERE`` with ``= != <> < > <= >= IN NOT IN LIKE``,
``AND``/``OR``/``NOT`` and parentheses, literals (strings with backslash escapes, numbers,
``NULL``, ``TRUE``/``FALSE``, dates, datetimes, ``TODAY``, ``LAST_N_DAYS:n``), ``ORDER BY``
with ``ASC``/``DESC`` and ``NULLS FIRST``/``LAST``, ``LIMIT`` and ``OFFSET``.

As in Salesforce, keywords and field names are case-insensitive, string comparison is
case-insensitive, and mixing ``AND`` with ``OR`` without parentheses is a malformed query.
Field names are not checked here: the caller validates them against its describe metadata, and
asks ``literal_type_error`` whether each literal fits its field's type.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any


class SoqlError(Exception):
    """A query Salesforce would refuse: ``code`` is its errorCode, the message its text."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token and its 0-based offset in the query text."""

    kind: str  # ident, string, number, date, datetime, op, eof
    text: str
    pos: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field path as written: ``("Name",)`` or ``("Owner", "Name")``."""

    path: tuple[str, ...]
    pos: int

    @property
    def dotted(self) -> str:
        """The path joined with dots, as written."""
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class RelativeDate:
    """A relative date literal: ``TODAY``, ``YESTERDAY``, ``LAST_N_DAYS:n``, ``N_DAYS_AGO:n``."""

    name: str
    n: int = 0

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """The half-open UTC interval [start, end) the literal covers at ``now``."""
        today = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
        day = timedelta(days=1)
        if self.name == "TODAY":
            return today, today + day
        if self.name == "YESTERDAY":
            return today - day, today
        if self.name == "LAST_N_DAYS":
            # Salesforce: starts 00:00 n days ago and runs to the end of the current day.
            return today - self.n * day, today + day
        if self.name == "N_DAYS_AGO":
            return today - self.n * day, today - (self.n - 1) * day
        raise SoqlError("MALFORMED_QUERY", f"unsupported date literal {self.name}")


@dataclass(frozen=True, slots=True)
class Comparison:
    """``field op value``; for IN / NOT IN the value is a tuple of literals."""

    field: FieldRef
    op: str  # = != < > <= >= LIKE IN NOT IN
    value: Any


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``AND`` / ``OR`` of two or more conditions."""

    op: str
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``NOT condition``."""

    item: Condition


Condition = Comparison | BoolOp | Not


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One ORDER BY term; ``nulls_first`` already resolved from the direction's default."""

    field: FieldRef
    descending: bool
    nulls_first: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed SELECT statement."""

    fields: tuple[FieldRef, ...]
    count_only: bool
    sobject: str
    sobject_pos: int
    where: Condition | None
    order_by: tuple[OrderItem, ...]
    limit: int | None
    offset: int | None
    text: str

    def where_fields(self) -> list[FieldRef]:
        """Every field the WHERE clause refers to."""
        return [comparison.field for comparison in self.comparisons()]

    def comparisons(self) -> list[Comparison]:
        """Every ``field op value`` of the WHERE clause, in the order written."""
        found: list[Comparison] = []

        def walk(cond: Condition) -> None:
            if isinstance(cond, Comparison):
                found.append(cond)
            elif isinstance(cond, BoolOp):
                for item in cond.items:
                    walk(item)
            else:
                walk(cond.item)

        if self.where is not None:
            walk(self.where)
        return found


_KEYWORDS = frozenset(
    {
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "NULL", "TRUE", "FALSE",
        "ORDER", "BY", "ASC", "DESC", "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "COUNT",
    }
)  # fmt: skip
_RELATIVE = frozenset({"TODAY", "YESTERDAY"})
_RELATIVE_N = frozenset({"LAST_N_DAYS", "N_DAYS_AGO"})

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\d:T])
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|!=|<>|=|<|>|\(|\)|,|:)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


def _malformed(text: str, pos: int, message: str) -> SoqlError:
    """A MALFORMED_QUERY error shaped like Salesforce's: the query, a caret, row and column."""
    return SoqlError("MALFORMED_QUERY", _located(text, pos, message))


def _located(text: str, pos: int, message: str) -> str:
    """Salesforce's located error text: query line, caret line, ``ERROR at Row:1:Column:n``."""
    line = text.replace("\n", " ")
    return f"\n{line}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n{message}"


def tokenize(text: str) -> list[Token]:
    """Split a query into tokens; raises SoqlError(MALFORMED_QUERY) on a stray character."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _malformed(text, pos, f"unexpected token: '{text[pos]}'")
        kind = match.lastgroup or ""
        if kind == "ws":
            pos = match.end()
            continue
        if kind == "string":
            literal, end = _read_string(text, pos)
            tokens.append(Token("string", text[pos:end], pos, literal))
            pos = end
            continue
        raw = match.group()
        value: Any = raw
        if kind == "number":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "date":
            value = date.fromisoformat(raw)
        elif kind == "datetime":
            value = parse_datetime(raw)
        tokens.append(Token(kind, raw, pos, value))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a single-quoted literal starting at ``start``; returns (value, end offset)."""
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text):
                break
            nxt = text[pos + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            elif nxt in "%_":
                # kept escaped so LIKE can tell a literal % or _ from a wildcard
                out.append("\\" + nxt)
            else:
                raise _malformed(text, pos, f"Invalid string literal '\\{nxt}'")
            pos += 2
            continue
        if char == "'":
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    raise _malformed(text, start, "unexpected token: unterminated string literal")


def parse_datetime(raw: str) -> datetime:
    """Parse a SOQL/REST datetime (``Z``, ``+00:00`` or ``+0000`` offsets) to an aware UTC value."""
    text = raw.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    match = re.search(r"([+-])(\d{2})(\d{2})$", text)
    if match and ":" not in text[-6:]:
        text = text[: match.start()] + f"{match.group(1)}{match.group(2)}:{match.group(3)}"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class _Parser:
    """Recursive-descent parser over the token list."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text.upper() in words

    def is_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def advance(self) -> Token:
        token = self.tok
        self.i += 1
        return token

    def fail(self, token: Token | None = None) -> SoqlError:
        token = token or self.tok
        return _malformed(self.text, token.pos, f"unexpected token: '{token.text}'")

    def expect_kw(self, word: str) -> Token:
        if not self.is_kw(word):
            raise self.fail()
        return self.advance()

    def expect_op(self, op: str) -> Token:
        if not self.is_op(op):
            raise self.fail()
        return self.advance()

    def field(self) -> FieldRef:
        token = self.tok
        if token.kind != "ident" or token.text.upper() in _KEYWORDS:
            raise self.fail()
        self.advance()
        return FieldRef(tuple(token.text.split(".")), token.pos)

    def integer(self) -> int:
        token = self.tok
        if token.kind != "number" or not isinstance(token.value, int) or token.value < 0:
            raise self.fail()
        self.advance()
        return token.value

    def parse(self) -> Query:
        self.expect_kw("SELECT")
        fields: list[FieldRef] = []
        count_only = False
        if self.is_kw("COUNT") and self.tokens[self.i + 1].text == "(":
            self.advance()
            self.expect_op("(")
            self.expect_op(")")
            count_only = True
        else:
            fields.append(self.field())
            while self.is_op(","):
                self.advance()
                fields.append(self.field())
        self.expect_kw("FROM")
        obj = self.tok
        if obj.kind != "ident" or "." in obj.text or obj.text.upper() in _KEYWORDS:
            raise self.fail()
        self.advance()
        where = None
        if self.is_kw("WHERE"):
            self.advance()
            where = self.condition()
        order: list[OrderItem] = []
        if self.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            order.append(self.order_item())
            while self.is_op(","):
                self.advance()
                order.append(self.order_item())
        limit = offset = None
        if self.is_kw("LIMIT"):
            self.advance()
            limit = self.integer()
        if self.is_kw("OFFSET"):
            self.advance()
            offset = self.integer()
        if self.tok.kind != "eof":
            raise self.fail()
        return Query(
            fields=tuple(fields),
            count_only=count_only,
            sobject=obj.text,
            sobject_pos=obj.pos,
            where=where,
            order_by=tuple(order),
            limit=limit,
            offset=offset,
            text=self.text,
        )

    def order_item(self) -> OrderItem:
        ref = self.field()
        descending = False
        if self.is_kw("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_first = not descending
        if self.is_kw("NULLS"):
            self.advance()
            if not self.is_kw("FIRST", "LAST"):
                raise self.fail()
            nulls_first = self.advance().text.upper() == "FIRST"
        return OrderItem(ref, descending, nulls_first)

    def condition(self) -> Condition:
        first = self.unary()
        if not self.is_kw("AND", "OR"):
            return first
        op = self.tok.text.upper()
        items = [first]
        while self.is_kw("AND", "OR"):
            if self.tok.text.upper() != op:
                # SOQL refuses `a AND b OR c`: parentheses are required when mixing.
                raise self.fail()
            self.advance()
            items.append(self.unary())
        return BoolOp(op, tuple(items))

    def unary(self) -> Condition:
        if self.is_kw("NOT"):
            self.advance()
            return Not(self.unary())
        if self.is_op("("):
            self.advance()
            inner = self.condition()
            self.expect_op(")")
            return inner
        return self.comparison()

    def comparison(self) -> Condition:
        ref = self.field()
        if self.is_op("=", "!=", "<>", "<", ">", "<=", ">="):
            op = self.advance().text
            return Comparison(ref, "!=" if op == "<>" else op, self.literal())
        if self.is_kw("LIKE"):
            self.advance()
            token = self.tok
            if token.kind != "string":
                raise self.fail()
            self.advance()
            return Comparison(ref, "LIKE", token.value)
        negate = False
        if self.is_kw("NOT"):
            self.advance()
            negate = True
        if self.is_kw("IN"):
            self.advance()
            self.expect_op("(")
            values = [self.literal()]
            while self.is_op(","):
                self.advance()
                values.append(self.literal())
            self.expect_op(")")
            return Comparison(ref, "NOT IN" if negate else "IN", tuple(values))
        raise self.fail()

    def literal(self) -> Any:
        token = self.tok
        if token.kind in ("string", "number", "date", "datetime"):
            self.advance()
            return token.value
        if token.kind == "ident":
            word = token.text.upper()
            if word in ("NULL", "TRUE", "FALSE"):
                self.advance()
                return {"NULL": None, "TRUE": True, "FALSE": False}[word]
            if word in _RELATIVE:
                self.advance()
                return RelativeDate(word)
            if word in _RELATIVE_N:
                self.advance()
                self.expect_op(":")
                return RelativeDate(word, self.integer())
        raise self.fail()


def parse(text: str) -> Query:
    """Parse a SOQL SELECT; raises SoqlError(MALFORMED_QUERY) with Salesforce's located message."""
    return _Parser(text).parse()


def invalid_field(query: Query, ref: FieldRef, message: str) -> SoqlError:
    """An INVALID_FIELD error located at ``ref`` in the query text."""
    return SoqlError("INVALID_FIELD", _located(query.text, ref.pos, message))


_LITERAL_TYPE_NAMES = {"date": "date", "datetime": "dateTime", "boolean": "boolean"}


def literal_type_error(query: Query, comparison: Comparison, field_type: str) -> SoqlError | None:
    """Salesforce's INVALID_FIELD when a date, dateTime or boolean field is compared with a
    literal of another kind: "If you specify a dateTime format in a query, you can filter only
    on dateTime fields. Similarly, if you specify a date format value, you can filter only on
    date fields"; a quoted value is a string. None when the literal fits (or the type is
    another)."""
    name = _LITERAL_TYPE_NAMES.get(field_type)
    if name is None or comparison.op == "LIKE":
        return None
    values = comparison.value if comparison.op in ("IN", "NOT IN") else (comparison.value,)
    if all(_literal_fits(field_type, value) for value in values):
        return None
    return invalid_field(
        query,
        comparison.field,
        f"value of filter criterion for field '{comparison.field.path[-1]}' must be of type "
        f"{name} and should not be enclosed in quotes",
    )


def _literal_fits(field_type: str, value: Any) -> bool:
    if value is None:
        return True
    if field_type == "boolean":
        return isinstance(value, bool)
    if isinstance(value, RelativeDate):
        return True
    if field_type == "datetime":
        return isinstance(value, datetime)
    return isinstance(value, date) and not isinstance(value, datetime)


def like_regex(pattern: str) -> re.Pattern[str]:
    """The regex for a LIKE pattern: ``%`` any run, ``_`` one character, ``\\%``/``\\_`` literal."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _normalise(value: Any) -> Any:
    """A value ready to compare: strings case-folded, dates as datetimes, ints as floats."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _compare(actual: Any, op: str, literal: Any, now: datetime) -> bool:
    """One comparison with SOQL's null semantics (a null only equals NULL; != includes nulls)."""
    if isinstance(literal, RelativeDate):
        if actual is None:
            return op == "!="
        start, end = literal.bounds(now)
        moment = _normalise(actual)
        if not isinstance(moment, datetime):
            return False
        inside = start <= moment < end
        return {
            "=": inside,
            "!=": not inside,
            "<": moment < start,
            "<=": moment < end,
            ">": moment >= end,
            ">=": moment >= start,
        }[op]
    if literal is None:
        if op == "=":
            return actual is None
        if op == "!=":
            return actual is not None
        return False
    if actual is None:
        return op == "!="
    left, right = _normalise(actual), _normalise(literal)
    try:
        if op == "=":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "<":
            return bool(left < right)
        if op == ">":
            return bool(left > right)
        if op == "<=":
            return bool(left <= right)
        if op == ">=":
            return bool(left >= right)
    except TypeError:
        return False
    raise SoqlError("MALFORMED_QUERY", f"unsupported operator {op}")


def evaluate(cond: Condition, get: Callable[[FieldRef], Any], now: datetime) -> bool:
    """Whether a record satisfies ``cond``; ``get`` returns the record's value for a field."""
    if isinstance(cond, BoolOp):
        if cond.op == "AND":
            return all(evaluate(item, get, now) for item in cond.items)
        return any(evaluate(item, get, now) for item in cond.items)
    if isinstance(cond, Not):
        return not evaluate(cond.item, get, now)
    actual = get(cond.field)
    if cond.op == "LIKE":
        return actual is not None and like_regex(cond.value).fullmatch(str(actual)) is not None
    if cond.op in ("IN", "NOT IN"):
        hit = any(_compare(actual, "=", item, now) for item in cond.value)
        if cond.op == "IN":
            return hit
        return actual is not None and not hit
    return _compare(actual, cond.op, cond.value, now)


def sort_rows(
    rows: Sequence[Any], order_by: Sequence[OrderItem], get: Callable[[Any, FieldRef], Any]
) -> list[Any]:
    """Rows sorted by the ORDER BY terms (strings case-insensitively, nulls where asked)."""

    def compare(a: Any, b: Any) -> int:
        for item in order_by:
            left, right = get(a, item.field), get(b, item.field)
            if left is None and right is None:
                continue
            if left is None or right is None:
                left_first = (left is None) == item.nulls_first
                return -1 if left_first else 1
            x, y = _normalise(left), _normalise(right)
            if x == y:
                continue
            result = -1 if x < y else 1
            return -result if item.descending else result
        return 0

    return sorted(rows, key=functools.cmp_to_key(compare))
