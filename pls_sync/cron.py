"""Standard five-field cron expressions, read the way every cron a user has met reads them.

``minute hour day-of-month month day-of-week``, each a ``*``, a number, a name (``jan``-``dec``,
``sun``-``sat``, any case), a range ``a-b``, a step ``*/n`` / ``a-b/n`` / ``a/n`` (from ``a`` to
the field's end), or a comma-separated list of those. Day of week 0 and 7 are both Sunday. The
macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and
``@hourly`` stand for their usual expressions.

As in Vixie cron (and cronie, and the crontab(5) manual): when both day fields are restricted,
i.e. neither starts with ``*``, a day matches when *either* matches (``0 9 1,15 * 1`` runs on the
1st, the 15th and every Monday); when one of them starts with ``*``, both must match.

APScheduler 3, which runs the jobs, reads day-of-week numbers with 0 = Monday and always ANDs
the two day fields. So an expression is parsed here, and APScheduler is handed explicit values
(and, for the "either day field" rule, two triggers joined with ``OrTrigger``): APScheduler never
reads the user's text. Parsing does no I/O; APScheduler is imported only to build a trigger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

__all__ = ["CronError", "CronExpression", "cron_trigger", "next_fire_times", "parse_cron"]

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# The longest each month can be (February in a leap year), to refuse dates that never come.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class _Field:
    """One of the five fields: its name for messages, its range and its names."""

    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES, 1),
    _Field("day of week", 0, 7, _DAY_NAMES, 0),
)


class CronError(ValueError):
    """A cron expression that is not standard five-field cron; the message says why."""


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed expression: the values each field allows.

    ``weekdays`` count from 0 = Sunday to 6 = Saturday (7 is folded into 0). ``days_star`` and
    ``weekdays_star`` say whether the field starts with ``*``, which decides how the two day
    fields combine (see the module docstring).
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    days_star: bool
    weekdays_star: bool

    @property
    def either_day(self) -> bool:
        """Whether a day matches on either day field (both restricted) rather than on both."""
        return not self.days_star and not self.weekdays_star


def parse_cron(text: str) -> CronExpression:
    """Parse a standard five-field cron expression (or a macro); ``CronError`` when it is not one."""
    if not isinstance(text, str) or not text.strip():
        raise CronError(
            "a cron expression is five fields: minute hour day-of-month month day-of-week"
        )
    stripped = text.strip()
    if stripped.startswith("@"):
        expanded = MACROS.get(stripped.lower())
        if expanded is None:
            raise CronError(
                f"unknown macro {stripped!r}; use one of {', '.join(MACROS)} or five fields"
            )
        stripped = expanded
    parts = stripped.split()
    if len(parts) != len(_FIELDS):
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), found {len(parts)}"
            + ("; seconds and years are not part of standard cron" if len(parts) > 5 else "")
        )
    values = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    weekdays = tuple(sorted({day % 7 for day in values[4]}))
    expression = CronExpression(
        text=text.strip(),
        minutes=tuple(values[0]),
        hours=tuple(values[1]),
        days=tuple(values[2]),
        months=tuple(values[3]),
        weekdays=weekdays,
        days_star=parts[2].startswith("*"),
        weekdays_star=parts[4].startswith("*"),
    )
    if not expression.either_day and not _some_date_exists(expression):
        raise CronError(
            "it never fires: no month of "
            + ", ".join(_MONTH_NAMES[m - 1] for m in expression.months)
            + " has day "
            + ", ".join(str(d) for d in expression.days)
        )
    return expression


def _some_date_exists(expression: CronExpression) -> bool:
    """Whether some listed day of month exists in some listed month (29 February counts)."""
    return any(
        day <= _MONTH_DAYS[month - 1] for month in expression.months for day in expression.days
    )


def _parse_field(text: str, spec: _Field) -> list[int]:
    """The sorted values a field allows; ``CronError`` naming the field otherwise."""
    found: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{spec.label} {text!r}: an empty item in a list")
        found.update(_parse_item(item, spec, text))
    return sorted(found)


def _parse_item(item: str, spec: _Field, whole: str) -> range:
    """``*``, ``a``, ``a-b``, each optionally ``/step``, as the range of values it allows."""
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronError(f"{spec.label} {whole!r}: a step is a whole number of at least 1")
        step = int(step_text)
    if base == "*":
        return range(spec.low, spec.high + 1, step)
    low_text, dash, high_text = base.partition("-")
    low = _value(low_text, spec, whole)
    if dash:
        high = _value(high_text, spec, whole)
    elif slash:
        high = spec.high  # "a/n" runs from a to the field's end, as in cronie
    else:
        high = low
    if low > high:
        raise CronError(
            f"{spec.label} {whole!r}: the range {base} runs backwards; write it low-high"
            + (" (e.g. 6-7 or sat,sun for the weekend)" if spec.names is _DAY_NAMES else "")
        )
    return range(low, high + 1, step)


def _value(text: str, spec: _Field, whole: str) -> int:
    """One number or name of a field, checked against the field's range."""
    if text.isdigit():
        number = int(text)
    elif text.lower() in spec.names:
        number = spec.names.index(text.lower()) + spec.names_start
    else:
        hint = f" or a name ({spec.names[0]}-{spec.names[-1]})" if spec.names else ""
        raise CronError(f"{spec.label} {whole!r}: {text!r} is not a number{hint}")
    if not spec.low <= number <= spec.high:
        raise CronError(
            f"{spec.label} {whole!r}: {number} is out of range {spec.low}-{spec.high}"
            + (" (0 and 7 are Sunday)" if spec.names is _DAY_NAMES else "")
        )
    return number


def _listed(values: Sequence[int], full: Sequence[int]) -> str:
    """A field as APScheduler takes it: ``*`` when every value is allowed, else the values."""
    return "*" if tuple(values) == tuple(full) else ",".join(str(v) for v in values)


def cron_trigger(text: str | CronExpression, timezone: str) -> BaseTrigger:
    """An APScheduler trigger that fires exactly when standard cron would, in ``timezone``."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    expression = text if isinstance(text, CronExpression) else parse_cron(text)
    zone = ZoneInfo(timezone)
    # APScheduler numbers weekdays from 0 = Monday; cron from 0 = Sunday.
    weekdays = sorted((day - 1) % 7 for day in expression.weekdays)
    common = {
        "minute": _listed(expression.minutes, range(60)),
        "hour": _listed(expression.hours, range(24)),
        "month": _listed(expression.months, range(1, 13)),
        "timezone": zone,
    }
    days = _listed(expression.days, range(1, 32))
    day_of_week = _listed(weekdays, range(7))
    if expression.either_day:
        return OrTrigger(
            [
                CronTrigger(day=days, day_of_week="*", **common),
                CronTrigger(day="*", day_of_week=day_of_week, **common),
            ]
        )
    return CronTrigger(day=days, day_of_week=day_of_week, **common)


def next_fire_times(
    text: str | CronExpression, timezone: str, after: datetime, count: int = 3
) -> list[datetime]:
    """The next ``count`` times the expression fires strictly after ``after``, in ``timezone``."""
    trigger = cron_trigger(text, timezone)
    zone = ZoneInfo(timezone)
    times: list[datetime] = []
    # APScheduler returns a fire time at or after the moment it is given.
    moment = after.astimezone(zone) + timedelta(microseconds=1)
    while len(times) < count:
        fire = trigger.get_next_fire_time(None, moment)
        if fire is None:
            break
        times.append(fire.astimezone(zone))
        moment = fire + timedelta(microseconds=1)
    return times
