"""PQA scoring: usage metrics in, a 0-100 score, a tier and an explanation out. Standard library only.

The model is data (``ScoringModel``), built from ``config/scoring.yaml`` by ``pls_sync.config``.
Conditions are compared, never evaluated as code.

A metric may be unknown: ``None`` (a warehouse NULL), NaN, or absent from the account. Unknown
is never 0: a condition on it does not hold (neither ``< 1`` nor ``== 0``), a component with
no known metric scores 0 points and says which metrics were unknown, and a ratio with an
unknown side is unknown.
"""

from __future__ import annotations

import math
import operator
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pls_sync.models import ProductAccount

__all__ = [
    "GUARD_MIN_AGE",
    "OPERATORS",
    "MetricSum",
    "AccountScore",
    "Component",
    "ComponentScore",
    "Condition",
    "ConditionGroup",
    "FiredSignal",
    "Metrics",
    "Ratio",
    "Rule",
    "ScoringModel",
    "Signal",
    "Tier",
    "derive_metrics",
    "evaluate",
    "label_names",
    "normalise",
    "render_label",
    "score_account",
    "score_accounts",
    "tier_counts",
    "tier_for",
]


@dataclass(frozen=True, slots=True)
class Condition:
    """``metric op value``, e.g. ``active_users_28d >= 7``. An unknown metric never matches."""

    metric: str
    op: str  # one of >=, >, <=, <, ==, !=
    value: float


@dataclass(frozen=True, slots=True)
class ConditionGroup:
    """All (``mode='all'``) or any (``mode='any'``) of the nested rules."""

    mode: str  # "all" | "any"
    rules: tuple[Rule, ...]


Rule = Condition | ConditionGroup


@dataclass(frozen=True, slots=True)
class Ratio:
    """A derived metric: numerator / max(denominator, min_denominator)."""

    name: str
    numerator: str
    denominator: str
    min_denominator: float = 1.0


@dataclass(frozen=True, slots=True)
class MetricSum:
    """A derived metric: the sum of each part's points, each read off its own curve.

    ``parts`` is ((metric, curve), ...). It gathers several behaviours into one number a
    component can weigh (e.g. buyer intent: legal pages, admin changes, pricing views,
    enterprise features), where a component alone would take only the best of them. An
    unknown part adds nothing; with every part unknown the sum is unknown.
    """

    name: str
    parts: tuple[tuple[str, tuple[tuple[float, float], ...]], ...]


@dataclass(frozen=True, slots=True)
class Component:
    """A weighted score component, normalised to 0-100 by a piecewise-linear curve.

    ``curve`` is ((x0, y0), (x1, y1), ...) with x ascending and y non-decreasing in 0..100;
    below x0 the value is y0, above the last x it is the last y. With several ``metrics``
    the component takes the best (max) normalised value, so any of them can carry it.
    ``label`` is the text template of the explanation, e.g. "{value:.0f} active users".
    With ``discount_young``, an account younger than the model's ``min_account_age_days``
    gets its points in proportion to its age: for a days-old account every user and event is
    new, so growth there says little.
    """

    name: str
    weight: float
    metrics: tuple[str, ...]
    curve: tuple[tuple[float, float], ...]
    label: str = ""
    discount_young: bool = False


@dataclass(frozen=True, slots=True)
class Signal:
    """A behavioural trigger: when ``when`` holds, add ``points`` and show ``label`` to reps.

    ``label`` is a template over metric names, e.g. "{new_users_7d:.0f} new users this week".
    """

    name: str
    when: Rule
    points: float
    label: str


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier and its lower bound; tiers are held highest first."""

    name: str
    min_score: float


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """The whole scoring model: components, signals, tiers, hysteresis and the age guard."""

    components: tuple[Component, ...]
    signals: tuple[Signal, ...] = ()
    tiers: tuple[Tier, ...] = (Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0))
    ratios: tuple[Ratio, ...] = ()
    sums: tuple[MetricSum, ...] = ()
    hysteresis: float = 5.0
    min_account_age_days: int = 14
    guarded_tiers: tuple[str, ...] = ("sales",)
    qualified_tiers: tuple[str, ...] = ("sales",)
    # Above this total, points still count but ever less (``saturate``): the score nears 100
    # without reaching it, so the top of the list keeps its order instead of a block of 100s.
    # None: totals above 100 are clipped to 100.
    saturate_above: float | None = None


def saturate(total: float, above: float | None) -> float:
    """``total`` as a 0..100 score: unchanged up to ``above``, then ``above + (100 - above) *
    (1 - exp(-(total - above) / (100 - above)))``, which keeps the order, the slope at the knee
    and every tier bound at or below it; with ``above`` None, clipped to 0..100."""
    if total <= 0.0:
        return 0.0
    if above is None or above >= 100.0 or total <= above:
        return min(total, 100.0)
    room = 100.0 - above
    return above + room * (1.0 - math.exp(-(total - above) / room))


@dataclass(frozen=True, slots=True)
class ComponentScore:
    """One component's part of a score: which metric carried it, normalised value, points."""

    name: str
    metric: str | None
    value: float | None
    normalised: float
    weight: float
    points: float
    description: str


@dataclass(frozen=True, slots=True)
class FiredSignal:
    """A signal that fired for an account, with the text a rep reads."""

    name: str
    points: float
    description: str


@dataclass(frozen=True, slots=True)
class AccountScore:
    """An account's score, tier and the explanation behind them.

    ``raw_tier`` is what the score alone says; ``tier`` applies hysteresis against the
    previous tier and the minimum-age guard. ``guard`` names the guard that held the account
    back, if any.
    """

    key: str
    domain: str
    score: int
    raw_tier: str
    tier: str
    components: tuple[ComponentScore, ...]
    signals: tuple[FiredSignal, ...]
    metrics: dict[str, float | None] = field(default_factory=dict)
    age_days: float | None = None
    guard: str | None = None
    scored_at: datetime | None = None


OPERATORS: Mapping[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
"""The comparison operators a ``Condition`` may use, by their config spelling."""

GUARD_MIN_AGE = "min_account_age"
"""``AccountScore.guard`` when the minimum-age guard held an account out of a guarded tier."""

_SECONDS_PER_DAY = 86_400.0

Metrics = Mapping[str, float | None]
"""Metric values by name; ``None`` is an unknown value (a warehouse NULL)."""


def _present(value: float | None) -> bool:
    """A metric is known when it is a number and not NaN (a warehouse NULL arrives as None)."""
    return value is not None and value == value


# --------------------------------------------------------------------------------------------
# Derived metrics


def derive_metrics(
    metrics: Metrics, ratios: Sequence[Ratio], sums: Sequence[MetricSum] = ()
) -> dict[str, float | None]:
    """Return a copy of ``metrics`` plus every ratio, then every sum, computed in order.

    A ratio is ``numerator / max(denominator, min_denominator)``. A numerator the account does
    not have leaves the ratio missing; a denominator it does not have counts as 0, so
    ``min_denominator`` applies. A side that is there but unknown (``None``) makes the ratio
    unknown (``None``): "15 new users, usual week unknown" is no spike. Ratios are computed in
    order, so a later ratio may use an earlier one.
    """
    derived = dict(metrics)
    for ratio in ratios:
        if ratio.numerator not in derived:
            continue
        numerator = derived[ratio.numerator]
        denominator = derived.get(ratio.denominator, ratio.min_denominator)
        if numerator is None or denominator is None:
            derived[ratio.name] = None
            continue
        # A denominator below the floor (or NaN, which compares false) is the floor.
        divisor = denominator if denominator >= ratio.min_denominator else ratio.min_denominator
        if divisor <= 0:
            # A model with min_denominator <= 0 would divide by zero: the ratio is undefined.
            continue
        derived[ratio.name] = numerator / divisor
    for metric_sum in sums:
        derived[metric_sum.name] = _sum_of_parts(
            derived, [(metric, _Curve(curve)) for metric, curve in metric_sum.parts]
        )
    return derived


def _sum_of_parts(metrics: Metrics, parts: Sequence[tuple[str, _Curve]]) -> float | None:
    """The points of every known part, added; None when no part is known."""
    total: float | None = None
    for metric, curve in parts:
        value = metrics.get(metric)
        if value is None or value != value:
            continue
        total = (total or 0.0) + curve(value)
    return total


# --------------------------------------------------------------------------------------------
# Normalisation curves


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 100.0)


class _Curve:
    """A piecewise-linear curve prepared for fast evaluation (see :func:`normalise`)."""

    __slots__ = ("xs", "ys", "first", "last")

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        self.xs = [float(x) for x, _ in points]
        self.ys = [float(y) for _, y in points]
        self.first = _clamp(self.ys[0]) if self.ys else 0.0
        self.last = _clamp(self.ys[-1]) if self.ys else 0.0

    def __call__(self, value: float) -> float:
        xs = self.xs
        if not xs or value != value or value <= xs[0]:
            return self.first
        if value >= xs[-1]:
            return self.last
        i = bisect_right(xs, value)  # xs[i - 1] <= value < xs[i]
        x0, x1 = xs[i - 1], xs[i]
        y0, y1 = self.ys[i - 1], self.ys[i]
        y = y0 + (y1 - y0) * (value - x0) / (x1 - x0)
        # Rounding may overshoot the segment's end by an ulp; clamping to the segment keeps the
        # curve monotone, and to 0..100 keeps a curve drawn outside that range in bounds.
        y = min(max(y, min(y0, y1)), max(y0, y1))
        return 0.0 if y < 0.0 else 100.0 if y > 100.0 else y


def normalise(value: float, curve: Sequence[tuple[float, float]]) -> float:
    """Map ``value`` onto 0..100 by the piecewise-linear ``curve`` of ``(x, y)`` points.

    Below the first x the result is the first y, above the last x the last y; between two
    points it is interpolated. An empty curve gives 0 and NaN gives the first y.
    """
    return _Curve(curve)(value)


# --------------------------------------------------------------------------------------------
# Conditions


def _operator(op: str) -> Callable[[float, float], bool]:
    try:
        return OPERATORS[op]
    except KeyError:
        raise ValueError(f"unknown comparison operator {op!r}") from None


def evaluate(rule: Rule, metrics: Metrics) -> bool:
    """Whether ``rule`` holds for ``metrics``; data is compared, never evaluated as code.

    A condition on an unknown metric (missing, ``None`` or NaN) is false, whatever its
    operator. ``all`` of nothing is true, ``any`` of nothing is false.
    """
    if isinstance(rule, Condition):
        value = metrics.get(rule.metric)
        return _present(value) and _operator(rule.op)(value, rule.value)  # type: ignore[arg-type]
    if isinstance(rule, ConditionGroup):
        if rule.mode == "all":
            return all(evaluate(inner, metrics) for inner in rule.rules)
        if rule.mode == "any":
            return any(evaluate(inner, metrics) for inner in rule.rules)
        raise ValueError(f"unknown condition group mode {rule.mode!r}")
    raise TypeError(f"not a rule: {rule!r}")


_Predicate = Callable[[Metrics], bool]


def _compile_rule(rule: Rule) -> _Predicate:
    """``rule`` as a closure with the same meaning as :func:`evaluate`, minus the dispatch."""
    if isinstance(rule, Condition):
        compare, metric, threshold = _operator(rule.op), rule.metric, rule.value

        def condition(metrics: Metrics) -> bool:
            value = metrics.get(metric)
            return value is not None and value == value and compare(value, threshold)

        return condition
    if isinstance(rule, ConditionGroup):
        inner = tuple(_compile_rule(r) for r in rule.rules)
        if rule.mode == "all":
            return lambda metrics: all(p(metrics) for p in inner)
        if rule.mode == "any":
            return lambda metrics: any(p(metrics) for p in inner)
        raise ValueError(f"unknown condition group mode {rule.mode!r}")
    raise TypeError(f"not a rule: {rule!r}")


# --------------------------------------------------------------------------------------------
# Label templates

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
# The format-spec mini-language with width and precision kept small: a spec comes from config,
# and "{x:999999999f}" would otherwise build a gigabyte string.
_SPEC = re.compile(r"(?:.?[<>=^])?[+\- ]?z?#?0?\d{0,3}[,_]?(?:\.\d{1,2})?[bdeEfFgGnoxX%]?")
_INTEGER_TYPES = frozenset("bdoxX")
_MISSING = "?"


def _plain(value: float) -> str:
    """A number without a spec: integer-valued floats lose their ``.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _valid_spec(spec: str | None) -> str:
    """``spec`` when it is a small numeric format spec, else "" (render the plain value)."""
    return spec if spec and _SPEC.fullmatch(spec) is not None else ""


def _format(value: float, spec: str) -> str:
    """``value`` formatted by an already validated ``spec``; any failure gives the plain value."""
    if not spec:
        return _plain(value)
    try:
        if spec[-1] in _INTEGER_TYPES and isinstance(value, float):
            if not math.isfinite(value):
                return _plain(value)
            value = math.floor(value + 0.5)  # "{n:d}" on 14.6 shows 15, as a rep would say
        return format(value, spec)
    except (TypeError, ValueError):
        return _plain(value)


class _Template:
    """A parsed label: ``(literal, name, spec)`` pieces, then a literal tail."""

    __slots__ = ("pieces", "tail", "names", "keys")

    def __init__(self, template: str) -> None:
        pieces: list[tuple[str, str, str]] = []
        literal: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(template):
            literal.append(template[position : match.start()])
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
            else:
                pieces.append(("".join(literal), match.group(1), _valid_spec(match.group(2))))
                literal = []
            position = match.end()
        literal.append(template[position:])
        self.pieces = tuple(pieces)
        self.tail = "".join(literal)
        # The names in order of first use: the key of a rendered-label cache.
        self.keys = tuple(dict.fromkeys(name for _, name, _ in pieces))
        self.names = frozenset(self.keys)

    def render(self, values: Metrics) -> str:
        """The label filled from ``values``; missing, unknown or NaN values show as ``?``."""
        out = ""
        for literal, name, spec in self.pieces:
            value = values.get(name)
            if value is None or value != value:
                out += literal + _MISSING
            else:
                out += literal + _format(value, spec)
        return out + self.tail


_templates: dict[str, _Template] = {}


def _template(template: str) -> _Template:
    parsed = _templates.get(template)
    if parsed is None:
        if len(_templates) > 1024:  # labels come from config: a handful, but stay bounded
            _templates.clear()
        parsed = _templates[template] = _Template(template)
    return parsed


def render_label(template: str, values: Metrics) -> str:
    """Fill ``{name}`` and ``{name:spec}`` placeholders in ``template`` from ``values``.

    Only plain names are substituted (no attribute or index access: this is not
    ``str.format``). A missing or unknown name renders as ``?``; a spec that is not a small
    numeric format spec (``.0f``, ``.1f``, ``d``, ``,``, ``.0%``...) falls back to the plain
    value; integer-valued floats without a spec render without ``.0``. ``{{`` and ``}}`` are literal
    braces; any other brace text is left as it is.
    """
    return _template(template).render(values)


def label_names(template: str) -> frozenset[str]:
    """The names a label template refers to (for validating labels against known metrics)."""
    return _template(template).names


# --------------------------------------------------------------------------------------------
# Tiers


class _Ladder:
    """Tiers highest first, with the lookups :func:`tier_for` and the age guard need."""

    __slots__ = ("names", "mins", "rank")

    def __init__(self, tiers: Sequence[Tier]) -> None:
        if not tiers:
            raise ValueError("a scoring model needs at least one tier")
        ordered = sorted(tiers, key=lambda tier: -tier.min_score)
        self.names = tuple(tier.name for tier in ordered)
        self.mins = tuple(float(tier.min_score) for tier in ordered)
        self.rank: dict[str, int] = {}
        for index, name in enumerate(self.names):
            self.rank.setdefault(name, index)

    def raw(self, score: float) -> int:
        """Index of the highest tier whose bound the score reaches (the lowest if none)."""
        for index, bound in enumerate(self.mins):
            if score >= bound:
                return index
        return len(self.mins) - 1

    def held(self, score: float, raw: int, previous: str | None, hysteresis: float) -> int:
        """Index of the tier after hysteresis: stay in a higher previous tier within the band."""
        if previous is None:
            return raw
        held = self.rank.get(previous)
        if held is not None and held < raw and score >= self.mins[held] - hysteresis:
            return held
        return raw


def tier_for(
    score: float, tiers: Sequence[Tier], previous_tier: str | None, hysteresis: float
) -> str:
    """The tier for ``score``, holding a higher ``previous_tier`` within the hysteresis band.

    The raw tier is the highest tier whose ``min_score`` the score reaches. An account whose
    previous tier is higher stays there while ``score >= previous min_score - hysteresis``:
    entering a tier needs the full bound, leaving it needs a drop of more than the band.
    An unknown previous tier is ignored.
    """
    ladder = _Ladder(tiers)
    raw = ladder.raw(score)
    return ladder.names[ladder.held(score, raw, previous_tier, hysteresis)]


def tier_counts(
    scores: Iterable[AccountScore], tiers: Sequence[Tier] | None = None
) -> dict[str, int]:
    """Accounts per tier, highest tier first.

    With ``tiers`` (the model's) every tier is listed, zeros included, in model order. Without,
    the order is inferred from the scores: tiers by the highest score their raw members reached.
    """
    counts: dict[str, int] = {}
    best_raw: dict[str, int] = {}
    best_any: dict[str, int] = {}
    for score in scores:
        counts[score.tier] = counts.get(score.tier, 0) + 1
        if score.score > best_raw.get(score.raw_tier, -1):
            best_raw[score.raw_tier] = score.score
        if score.score > best_any.get(score.tier, -1):
            best_any[score.tier] = score.score
    if tiers is not None:
        ordered = list(_Ladder(tiers).names) if tiers else []
        ordered += sorted(name for name in counts if name not in ordered)
        return {name: counts.get(name, 0) for name in dict.fromkeys(ordered)}
    # Raw tiers partition scores by their bounds, so their best scores order them truly;
    # a tier reached only through hysteresis or the guard falls back to its own best score.
    ranked = sorted(counts, key=lambda name: (-best_raw.get(name, best_any[name]), name))
    return {name: counts[name] for name in ranked}


# --------------------------------------------------------------------------------------------
# Scoring


# Rendered parts are cached per model: counts repeat across accounts (3 active users, 2 core
# features...), and building a label costs more than the rest of the score. Entries are frozen
# and shared; a cache is dropped when it outgrows this bound.
_CACHE_LIMIT = 16_384


class _CompiledComponent:
    """A component with its curve, label and per-metric caches of scored parts."""

    __slots__ = (
        "name",
        "weight",
        "curve",
        "template",
        "lookups",
        "unknown",
        "cached",
        "single",
        "discount_young",
    )

    def __init__(self, component: Component) -> None:
        self.name = component.name
        self.weight = float(component.weight)
        self.discount_young = component.discount_young
        self.curve = _Curve(component.curve)
        self.template = _template(component.label)
        # A label showing other metrics than {value} differs per account: never cached.
        self.cached = not (self.template.names - {"value"})
        self.lookups: tuple[tuple[str, dict[float, ComponentScore]], ...] = tuple(
            (metric, {}) for metric in component.metrics
        )
        self.single = self.lookups[0] if len(self.lookups) == 1 else None
        self.unknown = ComponentScore(
            self.name, None, None, 0.0, self.weight, 0.0, f"{', '.join(component.metrics)} unknown"
        )

    def score(self, metrics: Metrics) -> ComponentScore:
        """The component's part for ``metrics``: the best of its known metrics, or ``unknown``."""
        if self.single is not None:  # the common case, kept short
            metric, cache = self.single
            value = metrics.get(metric)
            if value is None or value != value:
                return self.unknown
            scored = cache.get(value)
            if scored is None:
                scored = self._build(metric, value, self.curve(value), metrics, cache)
            return scored
        best = -1.0
        best_metric: str | None = None
        best_value = 0.0
        best_scored: ComponentScore | None = None
        best_cache: dict[float, ComponentScore] = {}
        for metric, cache in self.lookups:
            value = metrics.get(metric)
            if value is None or value != value:
                continue
            scored = cache.get(value)
            normalised = scored.normalised if scored is not None else self.curve(value)
            if normalised > best:
                best, best_metric, best_value = normalised, metric, value
                best_scored, best_cache = scored, cache
        if best_metric is None:
            return self.unknown
        if best_scored is not None:
            return best_scored
        # Only the metric that carries the component gets its label rendered.
        return self._build(best_metric, best_value, best, metrics, best_cache)

    def _build(
        self,
        metric: str,
        value: float,
        normalised: float,
        metrics: Metrics,
        cache: dict[float, ComponentScore],
    ) -> ComponentScore:
        values = {"value": value} if self.cached else {**metrics, "value": value}
        scored = ComponentScore(
            self.name,
            metric,
            value,
            normalised,
            self.weight,
            self.weight * normalised,
            self.template.render(values),
        )
        if self.cached:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[value] = scored
        return scored


class _CompiledSignal:
    """A signal with its rule compiled (a lone condition inlined) and a cache of labels."""

    __slots__ = ("name", "points", "metric", "compare", "threshold", "when", "template", "cache")

    def __init__(self, signal: Signal) -> None:
        self.name = signal.name
        self.points = float(signal.points)
        rule = signal.when
        self.metric: str | None = None
        self.compare: Callable[[float, float], bool] = operator.ge
        self.threshold = 0.0
        self.when: _Predicate | None = None
        if isinstance(rule, Condition):
            self.metric, self.compare, self.threshold = rule.metric, _operator(rule.op), rule.value
        else:
            self.when = _compile_rule(rule)
        self.template = _template(signal.label)
        self.cache: dict[object, FiredSignal] = {}

    def fire(self, metrics: Metrics) -> FiredSignal:
        """The fired signal with its label for ``metrics``."""
        keys = self.template.keys
        key: object = (
            metrics.get(keys[0]) if len(keys) == 1 else tuple([metrics.get(k) for k in keys])
        )
        fired = self.cache.get(key)
        if fired is None:
            fired = FiredSignal(self.name, self.points, self.template.render(metrics))
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            self.cache[key] = fired
        return fired


class _CompiledModel:
    """A ``ScoringModel`` with curves, rules, labels and tier lookups prepared once."""

    __slots__ = (
        "ratios",
        "sums",
        "discounted",
        "components",
        "signals",
        "ladder",
        "hysteresis",
        "min_age_days",
        "guarded",
        "guard_fallback",
        "raw_tiers",
        "tiers_after",
        "checks",
    )

    def __init__(self, model: ScoringModel) -> None:
        self.ratios = tuple(model.ratios)
        self.sums = tuple(
            (s.name, tuple((metric, _Curve(curve)) for metric, curve in s.parts))
            for s in model.sums
        )
        self.components = tuple(_CompiledComponent(c) for c in model.components)
        self.discounted = any(c.discount_young for c in self.components)
        self.signals = tuple(_CompiledSignal(s) for s in model.signals)
        # Unpacked once per signal in the hot loop rather than read attribute by attribute.
        self.checks = tuple((s.metric, s.compare, s.threshold, s.when, s) for s in self.signals)
        self.ladder = ladder = _Ladder(model.tiers)
        self.hysteresis = float(model.hysteresis)
        self.min_age_days = float(model.min_account_age_days)
        self.guarded = frozenset(
            index for index, name in enumerate(ladder.names) if name in model.guarded_tiers
        )
        # For each guarded tier: the highest unguarded tier below it, else the lowest tier.
        fallback: dict[int, int] = {}
        for index in self.guarded:
            below = [i for i in range(index + 1, len(ladder.names)) if i not in self.guarded]
            fallback[index] = below[0] if below else len(ladder.names) - 1
        self.guard_fallback = fallback
        # Scores are integers 0..100: the tier of every score is looked up, not searched.
        self.raw_tiers = tuple(ladder.raw(score) for score in range(101))
        self.tiers_after: dict[str | None, tuple[int, ...]] = {}

    def tiers_table(self, previous: str | None) -> tuple[int, ...]:
        """Tier index by score (0..100) for an account whose previous tier was ``previous``."""
        ladder, raw = self.ladder, self.raw_tiers
        table = tuple(ladder.held(s, raw[s], previous, self.hysteresis) for s in range(101))
        if len(self.tiers_after) < 64:  # tier names: a handful, plus any renamed since
            self.tiers_after[previous] = table
        return table


# Keyed by id() with the model kept alive in the value, so an id is never reused while cached.
# Hashing a frozen model on every call would cost more than scoring the account.
_compiled_models: dict[int, tuple[ScoringModel, _CompiledModel]] = {}


def _compiled(model: ScoringModel) -> _CompiledModel:
    entry = _compiled_models.get(id(model))
    if entry is not None and entry[0] is model:
        return entry[1]
    if len(_compiled_models) >= 16:
        _compiled_models.clear()
    compiled = _CompiledModel(model)
    _compiled_models[id(model)] = (model, compiled)
    return compiled


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _discounted_for_age(
    components: tuple[ComponentScore, ...], compiled: _CompiledModel, age_days: float
) -> tuple[ComponentScore, ...]:
    """The parts of ``discount_young`` components scaled by age / the guard's minimum age
    (none without a minimum age)."""
    if compiled.min_age_days <= 0:
        return components
    share = max(age_days, 0.0) / compiled.min_age_days
    out: list[ComponentScore] = []
    for part, scored in zip(compiled.components, components, strict=True):
        if part.discount_young and scored.points > 0.0:
            scored = ComponentScore(
                scored.name,
                scored.metric,
                scored.value,
                scored.normalised,
                scored.weight,
                scored.points * share,
                f"{scored.description} (account {max(age_days, 0.0):.0f} days old: "
                f"{share:.0%} of the points)",
            )
        out.append(scored)
    return tuple(out)


def score_account(
    account: ProductAccount,
    model: ScoringModel,
    as_of: datetime,
    previous_tier: str | None = None,
) -> AccountScore:
    """Score one account: components, signals, a 0-100 score, its tier and why.

    Metrics are derived first (ratios, then sums). Each component takes the best normalised
    value among its metrics (the first metric wins a tie), times its weight; a component with
    none of its metrics known scores 0 and its description names them as unknown. A
    ``discount_young`` component of an account younger than ``min_account_age_days`` gets
    that share of its points (age / minimum age). Each signal whose condition holds adds its
    points (a condition on an unknown metric does not hold). The total is clamped to 0..100
    (or saturates above ``saturate_above``) and rounded half up. The tier applies hysteresis
    against ``previous_tier``, then the age guard: an account younger than
    ``min_account_age_days`` never sits in a guarded tier (it drops to the highest unguarded
    tier below) and ``guard`` says so. An unknown ``first_seen`` is not guarded. Naive
    datetimes are taken as UTC.
    """
    compiled = _compiled(model)
    metrics = derive_metrics(account.metrics, compiled.ratios)
    for name, parts in compiled.sums:
        metrics[name] = _sum_of_parts(metrics, parts)

    as_of = _utc(as_of)
    age_days: float | None = None
    if account.first_seen is not None:
        age_days = (as_of - _utc(account.first_seen)).total_seconds() / _SECONDS_PER_DAY

    components = tuple([part.score(metrics) for part in compiled.components])
    if compiled.discounted and age_days is not None and age_days < compiled.min_age_days:
        components = _discounted_for_age(components, compiled, age_days)
    total = 0.0
    for scored in components:
        total += scored.points

    fired: list[FiredSignal] = []
    get = metrics.get
    for metric, compare, threshold, when, signal in compiled.checks:
        if metric is not None:
            value = get(metric)
            if value is None or value != value or not compare(value, threshold):
                continue
        elif when is not None and not when(metrics):
            continue
        total += signal.points
        fired.append(signal.fire(metrics))

    total = saturate(total, model.saturate_above)
    # Rounded to 9 places first so float noise (72.49999999999999 for 72.5) rounds half up as
    # the arithmetic on paper does; int() is floor here, the total being non-negative.
    score = int(round(total, 9) + 0.5)

    tiers = compiled.tiers_after.get(previous_tier) or compiled.tiers_table(previous_tier)
    raw = compiled.raw_tiers[score]
    tier = tiers[score]
    ladder = compiled.ladder

    guard: str | None = None
    if age_days is not None and age_days < compiled.min_age_days and tier in compiled.guarded:
        tier = compiled.guard_fallback[tier]
        guard = GUARD_MIN_AGE

    return AccountScore(
        account.key,
        account.domain,
        score,
        ladder.names[raw],
        ladder.names[tier],
        components,
        tuple(fired),
        metrics,
        age_days,
        guard,
        as_of,
    )


def score_accounts(
    accounts: Iterable[ProductAccount],
    model: ScoringModel,
    as_of: datetime,
    previous_tiers: Mapping[str, str] | None = None,
) -> Iterator[AccountScore]:
    """Score every account lazily; ``previous_tiers`` maps account keys to last run's tier."""
    previous = previous_tiers or {}
    for account in accounts:
        yield score_account(account, model, as_of, previous.get(account.key))
