"""Conversion labels from the CRM: Salesforce won Opportunities, HubSpot deals in a won stage.

Both readers give what ``connectors.labels.read_labels`` gives: one ``Label`` per registrable
domain (``pls_sync.domains.classify_host``), converted, dated by the earliest won close date of
the accounts or companies naming it. The domains are those of the destination mapping's
``match.domain_fields`` (several per record, each field may hold a list), as matching reads them.

Salesforce: one SOQL query, paged through ``nextRecordsUrl``, reads the won opportunities with
their Account's domain fields through the relationship::

    SELECT Id, AccountId, CloseDate, Account.Website, Account.Domain__c FROM Opportunity
    WHERE IsWon = true AND CloseDate >= 2026-01-01

``IsWon`` is what the org says of the opportunity's stage (any stage marked won, not only
"Closed Won"); ``CloseDate`` is a date, so ``since`` filters by its UTC day and a label is
dated at 00:00 UTC of the close date.

HubSpot: the stages that count as won are the deal pipelines' stages whose metadata says
closed won (``GET /crm/v3/pipelines/deals``: ``isClosed`` ``"true"`` and ``probability``
``"1.0"``), or the configured ``labels.won_stages`` (checked against the pipelines). The deals
in them are searched (``POST /crm/v3/objects/deals/search``, ``dealstage`` IN the stages and
``closedate`` GTE ``since``, 200 a page in id order, on in windows of ids past the 10,000-result
cap); their companies come from the v4 associations batch read (1,000 deals a request) and the
companies' domain properties from the companies batch read (100 a request). The search lags
writes ("It may take a few moments for newly created or updated CRM objects to appear in
search results"): a deal won a few moments ago is not read yet. A backtest looks at past
conversions, so the search (only won deals, not every deal of the portal) is the right path.

Rows left out, counted by reason: ``no_account`` (a won opportunity with no account),
``no_company`` (a won deal associated with no company), and, once per account or company whose
domain fields name no company, ``no_domain`` or the ``pls_sync.domains`` reason (``free_mail``,
``platform_host``...). ``LabelRead.rows`` counts the won opportunities or deals read.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from connectors.labels import SKIP_NO_DOMAIN, Label, LabelRead
from pls_sync.config import LabelSettings, Settings
from pls_sync.domains import classify_host, split_domain_values
from pls_sync.errors import ConfigError, ConfigIssue, FatalError

if TYPE_CHECKING:
    from connectors.hubspot import HubSpotDestination
    from connectors.salesforce import SalesforceDestination

__all__ = [
    "ASSOCIATION_BATCH",
    "COMPANY_BATCH",
    "CRM_SOURCES",
    "SKIP_NO_ACCOUNT",
    "SKIP_NO_COMPANY",
    "closed_won_stages",
    "opportunity_soql",
    "read_crm_labels",
    "read_hubspot_labels",
    "read_salesforce_labels",
]

CRM_SOURCES = ("salesforce", "hubspot")
SKIP_NO_ACCOUNT = "no_account"
SKIP_NO_COMPANY = "no_company"
# "The Batch Read Associations API request body now supports a maximum of 1000 entries in the
# inputs field" (HubSpot developer changelog, effective February 10th, 2025).
ASSOCIATION_BATCH = 1000
COMPANY_BATCH = 100  # the companies batch read's inputs per request
_MAPPED_OBJECT = {"salesforce": "account", "hubspot": "companies"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class _Won:
    """An account or company with won deals: its raw domain values and earliest close."""

    values: list[str]
    closed_at: datetime | None


# -- the entry point ---------------------------------------------------------------------------


def read_crm_labels(
    settings: Settings,
    *,
    since: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> LabelRead:
    """The labels of ``settings.labels`` when its source is ``salesforce`` or ``hubspot``.

    The client is the destination's (``pls_sync.bootstrap.build_destination``: credentials
    from the environment or ``/run/secrets``), the domain fields its mapping's. ``since``
    keeps the deals closed at or after it (``None``: every won deal). Raises ``ConfigError``
    for labels or a destination that cannot work, ``AuthError``, ``RetriableError`` or
    ``FatalError`` (one line, no secret) for what the CRM answers.
    """
    labels = settings.labels
    if labels is None or labels.source not in CRM_SOURCES:
        source = labels.source if labels is not None else "none"
        raise _issue(
            labels, "source", f"the CRM labels need source salesforce or hubspot, not {source}"
        )
    destination_settings = settings.destinations.get(labels.source)
    if destination_settings is None:
        raise _issue(
            labels,
            "source",
            f"source: {labels.source} reads the CRM of destinations.{labels.source}, which is "
            "not configured",
        )
    mapping = destination_settings.mapping
    if mapping.object.lower() != _MAPPED_OBJECT[labels.source]:
        raise _issue(
            labels,
            "source",
            f"source: {labels.source} labels the {_MAPPED_OBJECT[labels.source]} of won deals, "
            f"but destinations.{labels.source} maps {mapping.object}",
        )
    if not mapping.match.domain_fields:
        raise _issue(
            labels,
            "source",
            f"destinations.{labels.source}'s mapping names no match.domain_fields to read the "
            "converted accounts' domains from",
        )
    from pls_sync.bootstrap import build_destination

    destination: Any = build_destination(labels.source, settings, env)
    if labels.source == "salesforce":
        return read_salesforce_labels(destination, mapping.match.domain_fields, since=since)
    return read_hubspot_labels(destination, labels, mapping.match.domain_fields, since=since)


def _issue(settings: LabelSettings | None, key: str, message: str) -> ConfigError:
    config_file = settings.config_file if settings is not None else "pls_sync.yaml"
    return ConfigError([ConfigIssue(config_file, None, f"labels.{key}", message)])


# -- Salesforce --------------------------------------------------------------------------------


def opportunity_soql(match_fields: Sequence[str], since: datetime | None = None) -> str:
    """The SOQL of the won opportunities with their Account's ``match_fields``, closed on or
    after ``since``'s UTC day (``CloseDate`` is a date: a date literal, unquoted)."""
    from connectors.salesforce import check_field_name

    fields = ["Id", "AccountId", "CloseDate"]
    fields += [f"Account.{check_field_name(name)}" for name in match_fields]
    where = "IsWon = true"
    if since is not None:
        where += f" AND CloseDate >= {_utc(since).date().isoformat()}"
    return f"SELECT {', '.join(dict.fromkeys(fields))} FROM Opportunity WHERE {where}"


def read_salesforce_labels(
    destination: SalesforceDestination,
    match_fields: Sequence[str],
    *,
    since: datetime | None = None,
) -> LabelRead:
    """Labels from the won opportunities of ``destination``'s org (see the module docstring).

    ``match_fields`` are the Account fields holding domains (the mapping's
    ``match.domain_fields``). Every page goes through ``destination.call`` (retries, a new
    session once, the project's errors); a query the org refuses is one ``FatalError`` line.
    """
    soql = opportunity_soql(match_fields, since)
    accounts: dict[str, _Won] = {}
    skipped: Counter[str] = Counter()
    rows = 0
    try:
        for record in _soql_records(destination, soql):
            rows += 1
            account_id = record.get("AccountId")
            if not account_id:
                skipped[SKIP_NO_ACCOUNT] += 1
                continue
            closed = _close_date(record.get("CloseDate"))
            won = accounts.get(str(account_id))
            if won is None:
                accounts[str(account_id)] = _Won(_account_values(record, match_fields), closed)
            else:
                won.closed_at = _earlier(won.closed_at, closed)
    except FatalError as exc:
        if type(exc) is not FatalError:  # AuthError, QuotaExhaustedError: their own lines
            raise
        raise FatalError(
            f"cannot read won opportunities from Salesforce: {_last_line(str(exc))}",
            code=exc.code,
        ) from None
    return _label_read(accounts, rows, skipped)


def _soql_records(destination: SalesforceDestination, soql: str) -> Iterator[Mapping[str, Any]]:
    """Every record of a query, page by page, each page a retried ``read`` call."""
    page = destination.call("read", lambda sf: sf.query(soql, timeout=destination.timeout))
    while True:
        yield from page.get("records") or ()
        next_url = page.get("nextRecordsUrl")
        if page.get("done", True) or not next_url:
            return
        page = destination.call(
            "read", functools.partial(destination.query_more, next_url=next_url)
        )


def _account_values(record: Mapping[str, Any], match_fields: Sequence[str]) -> list[str]:
    """The opportunity's Account's domain field values, in field order (paths followed)."""
    values: list[str] = []
    for name in match_fields:
        current: Any = record.get("Account")
        for part in name.split("."):
            if not isinstance(current, Mapping):
                current = None
                break
            lowered = part.lower()
            current = next((v for k, v in current.items() if k.lower() == lowered), None)
        if current is not None and str(current).strip():
            values.append(str(current).strip())
    return values


def _close_date(value: Any) -> datetime | None:
    """``CloseDate`` (``2026-03-01``) as 00:00 UTC of that day."""
    if not isinstance(value, str):
        return None
    try:
        day = date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _last_line(text: str) -> str:
    """Salesforce's own message: the last line of a located SOQL error, the text otherwise."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text
    head = lines[0].split(":", 1)[0]
    return f"{head}: {lines[-1]}"


# -- HubSpot -----------------------------------------------------------------------------------


class _HubSpotApis:
    """The deals, pipelines, associations and companies APIs of one destination, built once."""

    def __init__(self, destination: HubSpotDestination):
        client = destination.client()
        self.deals_search = client.crm.deals.search_api
        self.pipelines = client.crm.pipelines.pipelines_api
        self.associations = client.crm.associations.v4.batch_api
        self.companies_batch = client.crm.companies.batch_api


def read_hubspot_labels(
    destination: HubSpotDestination,
    settings: LabelSettings,
    match_fields: Sequence[str],
    *,
    since: datetime | None = None,
) -> LabelRead:
    """Labels from the deals in a won stage of ``destination``'s portal (see the module
    docstring): pipelines, then the search, the associations and the companies' domains.

    ``settings.won_stages`` names the won stage ids (``None``: closed won by the pipelines'
    metadata); a stage no pipeline has is a ``ConfigError``. Every call goes through
    ``destination.call`` (pacing, the search limit, retries, the project's errors).
    """
    apis = _HubSpotApis(destination)
    pipelines = _read_json(destination, apis.pipelines, _pipelines_request(apis, destination))
    stages = _won_stages(pipelines, settings)
    deals = list(_won_deals(destination, apis, stages, since))
    companies_of = _deal_companies(destination, apis, [deal_id for deal_id, _ in deals])
    companies: dict[str, _Won] = {}
    skipped: Counter[str] = Counter()
    for deal_id, closed in deals:
        linked = companies_of.get(deal_id) or []
        if not linked:
            skipped[SKIP_NO_COMPANY] += 1
        for company_id in linked:
            won = companies.get(company_id)
            if won is None:
                companies[company_id] = _Won([], closed)
            else:
                won.closed_at = _earlier(won.closed_at, closed)
    values = _company_values(destination, apis, list(companies), match_fields)
    for company_id, won in companies.items():
        won.values = values.get(company_id, [])
    return _label_read(companies, len(deals), skipped)


def closed_won_stages(pipelines: Mapping[str, Any]) -> dict[str, bool]:
    """Every stage id of a ``GET /crm/v3/pipelines/deals`` answer, and whether it is closed
    won: its metadata's ``isClosed`` is ``"true"`` and its ``probability`` is 1.0 ("0.0 being
    Closed Lost and 1.0 being Closed Won"). Archived pipelines and stages are left out."""
    stages: dict[str, bool] = {}
    for pipeline in _dicts(pipelines.get("results")):
        if pipeline.get("archived"):
            continue
        for stage in _dicts(pipeline.get("stages")):
            if stage.get("archived") or not stage.get("id"):
                continue
            metadata = _dict(stage.get("metadata"))
            closed = str(metadata.get("isClosed", "")).strip().lower() == "true"
            stages[str(stage["id"])] = closed and _probability(metadata.get("probability")) >= 1.0
    return stages


def _won_stages(pipelines: Mapping[str, Any], settings: LabelSettings) -> list[str]:
    """The stage ids that count as won: configured (each checked) or closed won by metadata."""
    stages = closed_won_stages(pipelines)
    if settings.won_stages is not None:
        unknown = [stage for stage in settings.won_stages if stage not in stages]
        if unknown:
            known = ", ".join(sorted(stages)) or "none"
            raise _issue(
                settings,
                "won_stages",
                f"no deal pipeline has the stage {', '.join(unknown)} (stage ids: {known})",
            )
        return sorted(set(settings.won_stages))
    won = sorted(stage for stage, is_won in stages.items() if is_won)
    if not won:
        raise _issue(
            settings,
            "won_stages",
            "no deal stage of the portal's pipelines is closed won (isClosed true, probability "
            "1.0): name the won stage ids in labels.won_stages",
        )
    return won


def _pipelines_request(apis: _HubSpotApis, destination: HubSpotDestination) -> Callable[[], Any]:
    return functools.partial(
        apis.pipelines.get_all,
        object_type="deals",
        _preload_content=False,
        _request_timeout=destination.timeout,
    )


def _won_deals(
    destination: HubSpotDestination,
    apis: _HubSpotApis,
    stages: Sequence[str],
    since: datetime | None,
) -> Iterator[tuple[str, datetime | None]]:
    """(deal id, close date) of every deal in ``stages`` closed at or after ``since``."""
    from connectors.hubspot import SEARCH_PAGE_SIZE, search_in_id_windows

    def fetch(above_id: str | None, after: str | None) -> Mapping[str, Any]:
        filters: list[dict[str, Any]] = [
            {"propertyName": "dealstage", "operator": "IN", "values": list(stages)}
        ]
        if since is not None:
            filters.append(
                {"propertyName": "closedate", "operator": "GTE", "value": str(epoch_millis(since))}
            )
        if above_id is not None:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": above_id})
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": ["dealstage", "closedate", "pipeline"],
            "limit": SEARCH_PAGE_SIZE,
        }
        if after is not None:
            body["after"] = after
        request = functools.partial(
            apis.deals_search.do_search,
            public_object_search_request=body,
            _preload_content=False,
            _request_timeout=destination.timeout,
        )
        return _read_json(destination, apis.deals_search, request)

    for deal in search_in_id_windows(fetch, object_name="deals"):
        closedate = _dict(deal.get("properties")).get("closedate")
        yield str(deal.get("id")), _hubspot_time(closedate)


def _deal_companies(
    destination: HubSpotDestination, apis: _HubSpotApis, deal_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Company ids by deal id, from the v4 associations batch read (1,000 deals a request;
    a deal with more companies than a page comes back with an ``after`` to ask again)."""
    found: dict[str, list[str]] = {}
    pending: list[dict[str, str]] = [{"id": deal_id} for deal_id in dict.fromkeys(deal_ids)]
    while pending:
        chunk, pending = pending[:ASSOCIATION_BATCH], pending[ASSOCIATION_BATCH:]
        request = functools.partial(
            apis.associations.get_page,
            from_object_type="deals",
            to_object_type="companies",
            # A plain body: a generated model per input would copy the client's configuration.
            batch_input_public_fetch_associations_batch_request={"inputs": chunk},
            _preload_content=False,
            _request_timeout=destination.timeout,
        )
        answer = _read_json(destination, apis.associations, request)
        for result in _dicts(answer.get("results")):
            deal_id = str(_dict(result.get("from")).get("id"))
            linked = found.setdefault(deal_id, [])
            for target in _dicts(result.get("to")):
                company_id = str(target.get("toObjectId"))
                if target.get("toObjectId") is not None and company_id not in linked:
                    linked.append(company_id)
            following = _dict(_dict(result.get("paging")).get("next")).get("after")
            if following:
                pending.append({"id": deal_id, "after": str(following)})
    return found


def _company_values(
    destination: HubSpotDestination,
    apis: _HubSpotApis,
    company_ids: Sequence[str],
    match_fields: Sequence[str],
) -> dict[str, list[str]]:
    """The domain property values of each company, 100 a batch read; missing ones are left out
    (a company archived since the deal was won has no domains to give)."""
    values: dict[str, list[str]] = {}
    for start in range(0, len(company_ids), COMPANY_BATCH):
        chunk = company_ids[start : start + COMPANY_BATCH]
        request = functools.partial(
            apis.companies_batch.read,
            batch_read_input_simple_public_object_id={
                "inputs": [{"id": company_id} for company_id in chunk],
                "properties": list(match_fields),
            },
            archived=False,
            _preload_content=False,
            _request_timeout=destination.timeout,
        )
        answer = _read_json(destination, apis.companies_batch, request)
        for company in _dicts(answer.get("results")):
            props = _dict(company.get("properties"))
            values[str(company.get("id"))] = [
                str(props[name]) for name in match_fields if props.get(name)
            ]
    return values


def _read_json(
    destination: HubSpotDestination, api: Any, request: Callable[[], Any]
) -> dict[str, Any]:
    """One paced, counted, retried ``read`` call whose JSON body is decoded; the deals,
    pipelines and associations packages' exceptions are translated here, as the destination
    translates the companies package's."""
    from connectors.hubspot import read_json

    def translated() -> dict[str, Any]:
        try:
            return read_json(request)
        except _api_exceptions() as exc:
            raise destination.translate(exc) from None

    return destination.call("read", api, translated)


@functools.cache
def _api_exceptions() -> tuple[type[Exception], ...]:
    from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
    from hubspot.crm.deals.exceptions import ApiException as DealsApiException
    from hubspot.crm.pipelines.exceptions import ApiException as PipelinesApiException

    return (DealsApiException, PipelinesApiException, AssociationsApiException)


def _hubspot_time(value: Any) -> datetime | None:
    """A HubSpot datetime value (ISO 8601 or epoch milliseconds) in UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return _EPOCH + timedelta(milliseconds=int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _utc(moment)


def epoch_millis(moment: datetime) -> int:
    return (_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def _probability(value: Any) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        return 0.0


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


# -- accounts to labels ------------------------------------------------------------------------


def _label_read(owners: Mapping[str, _Won], rows: int, skipped: Counter[str]) -> LabelRead:
    """One label per company domain of the accounts with won deals, at the earliest close; an
    account whose fields name no company is counted once, by the first reason met."""
    merged: dict[str, Label] = {}
    for won in owners.values():
        domains, reason = _company_domains(won.values)
        if not domains:
            skipped[reason] += 1
            continue
        for domain in domains:
            known = merged.get(domain)
            closed = won.closed_at if known is None else _earlier(known.converted_at, won.closed_at)
            merged[domain] = Label(domain, True, closed)
    return LabelRead(
        labels=[merged[domain] for domain in sorted(merged)], skipped=dict(skipped), rows=rows
    )


def _company_domains(values: Iterable[str]) -> tuple[list[str], str]:
    """The distinct registrable domains ``values`` name, and why none did (when none did)."""
    domains: list[str] = []
    reason: str | None = None
    for raw in values:
        for piece in split_domain_values(raw):
            verdict = classify_host(piece)
            if verdict.domain is not None and verdict.reason is None:
                if verdict.domain not in domains:
                    domains.append(verdict.domain)
            elif reason is None:
                reason = verdict.reason if verdict.domain is not None else SKIP_NO_DOMAIN
    return domains, reason or SKIP_NO_DOMAIN


def _earlier(first: datetime | None, second: datetime | None) -> datetime | None:
    """The earlier of two close times; an unknown one gives way to a known one."""
    if first is None or second is None:
        return first or second
    return min(first, second)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
