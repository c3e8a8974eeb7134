"""The plan's memoised canonical forms equal canonical() itself, whatever the value's type."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import FieldSpec, FieldType
from pls_sync.planning import CanonicalCache, canonical

SPECS = {
    "Score__c": FieldSpec("Score__c", FieldType.NUMBER, scale=0),
    "Ratio__c": FieldSpec("Ratio__c", FieldType.NUMBER, scale=2),
    "Count__c": FieldSpec("Count__c", FieldType.INTEGER),
    "Tier__c": FieldSpec("Tier__c", FieldType.PICKLIST, length=8),
    "Note__c": FieldSpec("Note__c", FieldType.STRING, length=12),
    "Signals__c": FieldSpec("Signals__c", FieldType.MULTIPICKLIST),
    "Since__c": FieldSpec("Since__c", FieldType.DATETIME),
    "Day__c": FieldSpec("Day__c", FieldType.DATE),
    "Flag__c": FieldSpec("Flag__c", FieldType.BOOLEAN),
}
MAPPING = DestinationMapping(
    "salesforce",
    "Account",
    MatchRule(("Website",)),
    tuple(
        FieldMapping(target, "score", join=" | ", max_length=10 if target == "Note__c" else None)
        for target in SPECS
    ),
)
moments = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), None]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "1", "1.0", "true", "0", "sales", "2026-11-22T10:00:00.000+0000"]),
    moments,
    st.dates(),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.tuples(scalars, scalars))


def same(first: object, second: object) -> bool:
    if isinstance(first, float) and isinstance(second, float) and first != first:
        return second != second  # NaN
    return type(first) is type(second) and first == second


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(SPECS)), values), min_size=1, max_size=40))
def test_the_cache_answers_what_canonical_answers(calls: list[tuple[str, object]]) -> None:
    cache = CanonicalCache(MAPPING, SPECS)
    by_target = {fm.target: fm for fm in MAPPING.fields}
    for target, value in calls + calls:  # the second pass answers from the memo
        fm = by_target[target]
        expected = canonical(value, SPECS[target], join=fm.join, max_length=fm.max_length)
        assert same(cache(target, value), expected)


def test_equal_values_of_different_types_keep_their_own_forms() -> None:
    cache = CanonicalCache(MAPPING, SPECS)
    assert cache("Note__c", 1) == "1"
    assert cache("Note__c", True) == "True"
    assert cache("Note__c", 1.0) == "1"
    assert cache("Day__c", datetime(2026, 12, 5, 23, 30, tzinfo=timezone(timedelta(hours=-5)))) == (
        date(2026, 12, 6)
    )
    assert cache("Day__c", date(2026, 12, 5)) == date(2026, 12, 5)
