"""Matching product accounts to CRM records by registrable domain. Standard library only.

The CRM side is indexed once per run (:func:`build_index`): every record's domain fields are
split and reduced to company domains with :func:`pls_sync.domains.company_domain`; values that
name no company (junk, platform URLs such as ``linkedin.com/company/acme``, shared hosting such
as ``acme.github.io``) are counted by reason and ignored. :func:`match_accounts` then looks
every account's domain up, applies the mapping's ``on_multiple`` rule when several records share
it, and settles records claimed by two accounts (a record with two domains, or two workspaces of
one company) in favour of the higher priority.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pls_sync.domains import (
    REASON_INVALID,
    REASON_PLATFORM_HOST,
    REASON_SHARED_HOSTING,
    company_domain,
    split_domain_values,
)
from pls_sync.models import CrmRecord

__all__ = [
    "AMBIGUOUS_RESOLVED",
    "AMBIGUOUS_SKIPPED",
    "CONFLICT_LOST",
    "MATCHED",
    "REFUSAL_REASONS",
    "RULES",
    "STATUSES",
    "UNMATCHED",
    "DomainIndex",
    "Match",
    "MatchReport",
    "build_index",
    "match_accounts",
    "resolve",
]

MATCHED = "matched"
UNMATCHED = "unmatched"
AMBIGUOUS_RESOLVED = "ambiguous_resolved"
AMBIGUOUS_SKIPPED = "ambiguous_skipped"
CONFLICT_LOST = "conflict_lost"
STATUSES = (MATCHED, UNMATCHED, AMBIGUOUS_RESOLVED, AMBIGUOUS_SKIPPED, CONFLICT_LOST)

RULES = ("skip", "most_recently_modified", "parent")

# Why a CRM domain value was not indexed; MatchReport.counts() reports each as crm_refused_<reason>.
REFUSAL_REASONS = (REASON_INVALID, REASON_PLATFORM_HOST, REASON_SHARED_HOSTING)


@dataclass(frozen=True, slots=True)
class Match:
    """How one product account matched: its status, the chosen record and all candidates.

    ``record_id`` is set for ``matched`` and ``ambiguous_resolved`` only. ``candidates`` holds the
    ids of every CRM record sharing the domain, sorted.
    """

    key: str
    domain: str
    status: str
    record_id: str | None
    candidates: tuple[str, ...]


class DomainIndex:
    """CRM records by registrable domain, with counts of what could not be indexed.

    ``refused`` counts the domain values that name no company, by reason (``invalid``,
    ``platform_host``, ``shared_hosting``); ``records_without_domain`` the records left with no
    usable domain at all.
    """

    def __init__(self) -> None:
        """Create an empty index; use :func:`build_index`."""
        self._by_domain: dict[str, list[CrmRecord]] = {}
        self.records: dict[str, CrmRecord] = {}
        self.refused: Counter[str] = Counter()
        self.records_without_domain = 0
        self.duplicate_records = 0

    @property
    def invalid_values(self) -> int:
        """Domain values with no registrable domain at all (junk, placeholders, IPs)."""
        return self.refused[REASON_INVALID]

    def candidates(self, domain: str) -> tuple[CrmRecord, ...]:
        """The records whose domain fields name ``domain`` (a registrable domain), in read order."""
        return tuple(self._by_domain.get(domain, ()))

    def domains_of(self, record_id: str) -> tuple[str, ...]:
        """The registrable domains indexed for one record (empty when unknown or junk only)."""
        record = self.records.get(record_id)
        return _record_domains(record)[0] if record else ()

    def shared_records(self) -> set[str]:
        """Ids of the records that share a domain with another record: the ones whose
        last-modified stamps decide a ``most_recently_modified`` match."""
        return {
            record.id
            for records in self._by_domain.values()
            if len(records) > 1
            for record in records
        }

    def __len__(self) -> int:
        """The number of distinct domains indexed."""
        return len(self._by_domain)

    def __contains__(self, domain: object) -> bool:
        """True when at least one record has ``domain``."""
        return domain in self._by_domain


def _record_domains(record: CrmRecord) -> tuple[tuple[str, ...], list[str]]:
    """A record's distinct company domains in field order, and the reasons of refused values."""
    domains: list[str] = []
    refused: list[str] = []
    for raw in record.domain_values:
        for piece in split_domain_values(raw):
            verdict = company_domain(piece)
            domain = verdict.domain
            if verdict.reason is not None or domain is None:
                refused.append(verdict.reason or REASON_INVALID)
            elif domain not in domains:
                domains.append(domain)
    return tuple(domains), refused


def build_index(records: Iterable[CrmRecord]) -> DomainIndex:
    """Index CRM records by the company domains of their domain fields.

    Values that name no company are counted in ``refused`` by reason, not indexed. A record
    read twice (paged reads can repeat one) is indexed once, the first copy kept.
    """
    index = DomainIndex()
    by_domain, by_id = index._by_domain, index.records
    for record in records:
        if record.id in by_id:
            index.duplicate_records += 1
            continue
        by_id[record.id] = record
        domains, refused = _record_domains(record)
        if refused:
            index.refused.update(refused)
        if not domains:
            index.records_without_domain += 1
        for domain in domains:
            if domain in by_domain:
                by_domain[domain].append(record)
            else:
                by_domain[domain] = [record]
    return index


def _modified_key(record: CrmRecord) -> float:
    stamp: datetime | None = record.last_modified
    if stamp is None:
        return float("-inf")
    if stamp.tzinfo is None:
        # CRMs report UTC; a naive value must still compare with aware ones.
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _single_parent(candidates: Sequence[CrmRecord]) -> CrmRecord | None:
    """The one candidate every other candidate descends from (within the candidates), or None."""
    by_id = {record.id: record for record in candidates}
    roots = [r for r in candidates if r.parent_id is None or r.parent_id not in by_id]
    if len(roots) != 1:
        return None
    root = roots[0]
    for record in candidates:
        seen: set[str] = set()
        current = record
        while current.id != root.id:
            if current.id in seen or current.parent_id not in by_id:
                return None  # a cycle, or a chain that leaves the candidates
            seen.add(current.id)
            current = by_id[current.parent_id]
    return root


def resolve(candidates: Sequence[CrmRecord], rule: str) -> CrmRecord | None:
    """Choose one record among ``candidates`` sharing a domain, by ``rule``; None for no choice.

    ``most_recently_modified``: the latest ``last_modified`` (missing counts as oldest; ties go
    to the smallest id). ``skip``: no choice when there are several. ``parent``: the single
    candidate that is the ancestor of all the others through ``parent_id``.
    A single candidate is always chosen. Raises ``ValueError`` for an unknown rule.
    """
    if rule not in RULES:
        raise ValueError(f"unknown on_multiple rule {rule!r}; expected one of {', '.join(RULES)}")
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    if rule == "most_recently_modified":
        # max() keeps the first of equal keys, so sorting by id first makes ties deterministic.
        return max(sorted(candidates, key=lambda r: r.id), key=_modified_key)
    if rule == "parent":
        return _single_parent(candidates)
    return None


@dataclass(slots=True)
class MatchReport:
    """The outcome of matching every account: one :class:`Match` per account key.

    ``crm_refused`` counts the CRM domain values that were not indexed, by refusal reason.
    """

    matches: dict[str, Match]
    crm_records: int = 0
    crm_domains: int = 0
    priorities: dict[str, float] = field(default_factory=dict)
    crm_refused: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Accounts per status (every status present, zero included), plus CRM totals.

        The CRM totals: ``crm_records``, ``crm_domains`` and ``crm_refused_<reason>`` for every
        reason of :data:`REFUSAL_REASONS` (``crm_refused_invalid``,
        ``crm_refused_platform_host``, ``crm_refused_shared_hosting``), zero included.
        """
        counts = dict.fromkeys(STATUSES, 0)
        for match in self.matches.values():
            counts[match.status] += 1
        counts["crm_records"] = self.crm_records
        counts["crm_domains"] = self.crm_domains
        for reason in REFUSAL_REASONS:
            counts[f"crm_refused_{reason}"] = self.crm_refused.get(reason, 0)
        return counts

    def matched(self) -> list[Match]:
        """Matches that name a record (``matched`` and ``ambiguous_resolved``), by key."""
        return [self.matches[key] for key in sorted(self.matches) if self.matches[key].record_id]

    def unmatched_top(
        self, n: int, priority: Mapping[str, float] | None = None
    ) -> list[tuple[str, float]]:
        """The ``n`` highest-priority domains with no CRM record: marketing's list.

        ``priority`` maps account keys (or domains) to a priority, by default the priorities given
        to :func:`match_accounts`. A domain shared by several unmatched accounts appears once,
        with the highest of their priorities. Ties are ordered by domain.
        """
        if n <= 0:
            return []
        source = self.priorities if priority is None else priority
        best: dict[str, float] = {}
        for match in self.matches.values():
            if match.status != UNMATCHED:
                continue
            value = source.get(match.key, source.get(match.domain, 0.0))
            if match.domain not in best or value > best[match.domain]:
                best[match.domain] = value
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:n]

    def record_for(self, key: str) -> str | None:
        """The CRM record id an account writes to, or None."""
        match = self.matches.get(key)
        return match.record_id if match else None


def match_accounts(
    accounts: Iterable[tuple[str, str, float]], index: DomainIndex, rule: str
) -> MatchReport:
    """Match ``(key, registrable domain, priority)`` accounts to indexed CRM records.

    Several candidates are settled by :func:`resolve` with ``rule``. When two accounts land on
    the same record, the higher priority keeps it (ties: the smaller key) and the others become
    ``conflict_lost``. Raises ``ValueError`` for an unknown rule or a repeated account key.
    """
    if rule not in RULES:
        raise ValueError(f"unknown on_multiple rule {rule!r}; expected one of {', '.join(RULES)}")
    matches: dict[str, Match] = {}
    priorities: dict[str, float] = {}
    holders: dict[str, str] = {}  # record id -> key of the account holding it so far
    by_domain = index._by_domain
    for key, domain, priority in accounts:
        if key in priorities:
            raise ValueError(f"account key {key!r} appears twice")
        priorities[key] = priority
        candidates = by_domain.get(domain)
        if not candidates:
            matches[key] = Match(key, domain, UNMATCHED, None, ())
            continue
        if len(candidates) == 1:
            chosen: CrmRecord | None = candidates[0]
            status = MATCHED
            ids: tuple[str, ...] = (candidates[0].id,)
        else:
            chosen = resolve(candidates, rule)
            status = AMBIGUOUS_RESOLVED if chosen else AMBIGUOUS_SKIPPED
            ids = tuple(sorted(record.id for record in candidates))
        if chosen is None:
            matches[key] = Match(key, domain, status, None, ids)
            continue
        holder = holders.get(chosen.id)
        if holder is not None:
            # Higher priority keeps the record; equal priorities go to the smaller key.
            held = priorities[holder]
            if held > priority or (held == priority and holder < key):
                matches[key] = Match(key, domain, CONFLICT_LOST, None, ids)
                continue
            lost = matches[holder]
            matches[holder] = Match(holder, lost.domain, CONFLICT_LOST, None, lost.candidates)
        holders[chosen.id] = key
        matches[key] = Match(key, domain, status, chosen.id, ids)

    return MatchReport(
        matches=matches,
        crm_records=len(index.records),
        crm_domains=len(index),
        priorities=priorities,
        crm_refused=dict(index.refused),
    )
