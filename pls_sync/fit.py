"""Fit: how well a company fits the ideal customer, apart from how it uses the product.

The playbook routes by segment (SMB stays self-serve, mid-market goes product-led sales,
enterprise is a hybrid), and the best PLS tools report fit and engagement side by side: the
PQA score says how ready an account is, the fit segment says what kind of company it is.

A company's size comes, in order of trust, from:

1. the CRM's employee count on the account's record (``firmographics.employees`` of a
   mapping), which RevOps curates;
2. an ``employees`` metric of a custom SQL model;
3. the sign-up profiles: the ``company_size`` its users reported, the band most of them chose
   (a tie goes to the larger band), read at its lower bound (``"51-200"`` is 51).

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pls_sync.channels import company_size_lower_bound

__all__ = [
    "DEFAULT_FIT",
    "EMPLOYEES_METRIC",
    "SOURCE_CRM",
    "SOURCE_METRIC",
    "SOURCE_SIGNUPS",
    "UNKNOWN_SEGMENT",
    "Fit",
    "FitModel",
    "FitSegment",
    "account_fit",
    "crm_employees",
    "employees_from_bands",
    "segment_for",
]

UNKNOWN_SEGMENT = "unknown"
"""The segment of a company whose size nothing tells."""

SOURCE_CRM = "crm"
SOURCE_METRIC = "metric"
SOURCE_SIGNUPS = "signups"

EMPLOYEES_METRIC = "employees"
"""The metric a custom SQL model may return with the company's employee count."""


@dataclass(frozen=True, slots=True)
class FitSegment:
    """A segment and the employee count it starts at."""

    name: str
    min_employees: float


@dataclass(frozen=True, slots=True)
class FitModel:
    """Segments by company size, held largest first; ``unknown`` names a company of no size."""

    segments: tuple[FitSegment, ...]
    unknown: str = UNKNOWN_SEGMENT

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.segments, key=lambda s: -s.min_employees))
        object.__setattr__(self, "segments", ordered)

    @property
    def names(self) -> tuple[str, ...]:
        """Every segment an account can get, largest first, then ``unknown``."""
        return (*(s.name for s in self.segments), self.unknown)


DEFAULT_FIT = FitModel(
    (FitSegment("enterprise", 1000), FitSegment("mid_market", 100), FitSegment("smb", 0))
)
"""The playbook's segments: SMB under 100 employees, mid-market to 999, enterprise from 1000."""


@dataclass(frozen=True, slots=True)
class Fit:
    """An account's segment, the employee count behind it and where that came from."""

    segment: str
    employees: float | None = None
    source: str | None = None  # crm, metric, signups; None when unknown

    def describe(self) -> str:
        """One line for reps: ``mid_market (250 employees, from the CRM)``."""
        if self.employees is None:
            return f"{self.segment} (company size unknown)"
        origin = {
            SOURCE_CRM: "the CRM",
            SOURCE_METRIC: "the warehouse model",
            SOURCE_SIGNUPS: "sign-up profiles",
        }.get(self.source or "", "unknown")
        return f"{self.segment} ({self.employees:.0f} employees, from {origin})"


def segment_for(employees: float | None, model: FitModel) -> str:
    """The largest segment whose bound ``employees`` reaches; ``unknown`` for no count."""
    if employees is None or employees != employees or employees < 0:
        return model.unknown
    for segment in model.segments:
        if employees >= segment.min_employees:
            return segment.name
    return model.unknown


def employees_from_bands(bands: Mapping[str, int]) -> float | None:
    """The company size its users reported: the band most chose (ties: the larger), at its
    lower bound; None when no band reads as a size."""
    votes: dict[int, int] = {}
    for band, users in bands.items():
        size = company_size_lower_bound(band)
        if size is not None and users > 0:
            votes[size] = votes.get(size, 0) + users
    if not votes:
        return None
    return float(max(votes.items(), key=lambda item: (item[1], item[0]))[0])


def crm_employees(value: object) -> float | None:
    """A CRM employee count as a number (Salesforce sends an int, HubSpot a string); None for
    empty, junk or negative values."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and value.strip():
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return None
    else:
        return None
    return number if number == number and 0 <= number < float("inf") else None


def account_fit(
    model: FitModel,
    *,
    crm: Sequence[object] = (),
    metric: float | None = None,
    bands: Mapping[str, int] | None = None,
) -> Fit:
    """The account's fit from the first source that knows its size: the CRM values (in the
    destinations' order), the model's ``employees`` metric, then the sign-up bands."""
    for value in crm:
        employees = crm_employees(value)
        if employees is not None:
            return Fit(segment_for(employees, model), employees, SOURCE_CRM)
    if metric is not None and metric == metric and metric >= 0:
        return Fit(segment_for(metric, model), float(metric), SOURCE_METRIC)
    from_bands = employees_from_bands(bands or {})
    if from_bands is not None:
        return Fit(segment_for(from_bands, model), from_bands, SOURCE_SIGNUPS)
    return Fit(model.unknown)
