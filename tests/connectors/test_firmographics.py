"""Firmographics reads: the CRM's employee count through the mapping, the warehouse's sizes.

CRM side, against the sandbox over real HTTP with the real clients: a mapping's
``firmographics`` fields come back in ``CrmRecord.fields`` on every read (Salesforce SOQL, full
and ``SystemModstamp`` incremental; HubSpot list, search and the list chosen for a large
modified set), a mapping without them reads what it always read, and no write sends them.

The CRM behaviour relied on is the one the connectors already use for the mapped fields: SOQL
returns the fields it selects, HubSpot the ``properties`` asked for (pinned against the sandbox
in tests/sandbox/); NumberOfEmployees (Account, ``int``) and numberofemployees (companies,
``number``, sent as text) are standard fields the sandbox seeds.

Warehouse side: ``SqlUsageSource.read_company_sizes`` on the hand-built warehouse of
``tests/connectors/test_warehouse.py`` with ``company_size`` values set per user.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import connectors.hubspot as hubspot_connector
from connectors.hubspot import HubSpotDestination
from connectors.salesforce import SalesforceDestination
from connectors.warehouse import SqlUsageSource
from pls_sync.errors import WarehouseError
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.matching import build_index, match_accounts
from pls_sync.models import (
    CrmRecord,
    FieldSpec,
    ProductAccount,
    RecordChange,
    UsageReadStats,
)
from pls_sync.planning import AccountResult, plan_changes
from pls_sync.ports import AccountState
from pls_sync.sandbox.http import Request
from pls_sync.scoring import AccountScore
from tests.connectors.test_warehouse import AS_OF, DAY, TAXONOMY, load_warehouse
from tests.fakes import FakeTime

NOW = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)  # after every seeded record's stamps

SF_PLAIN = DestinationMapping(
    destination="salesforce",
    object="Account",
    match=MatchRule(domain_fields=("Website",)),
    fields=(FieldMapping("PQA_Score__c", "score"), FieldMapping("PQA_Tier__c", "tier")),
)
SF_FIRMO = DestinationMapping(
    destination="salesforce",
    object="Account",
    match=MatchRule(domain_fields=("Website",)),
    fields=SF_PLAIN.fields,
    firmographics={"employees": "NumberOfEmployees"},
)
HS_PLAIN = DestinationMapping(
    destination="hubspot",
    object="companies",
    match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
    fields=(FieldMapping("pqa_score", "score"), FieldMapping("pqa_tier", "tier")),
)
HS_FIRMO = DestinationMapping(
    destination="hubspot",
    object="companies",
    match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
    fields=HS_PLAIN.fields,
    firmographics={"employees": "numberofemployees"},
)
SF_PLAIN_SOQL = (
    "SELECT Id, Name, LastModifiedDate, ParentId, OwnerId, Website, PQA_Score__c, PQA_Tier__c "
    "FROM Account"
)
HS_PLAIN_PROPERTIES = [
    "domain",
    "hs_additional_domains",
    "name",
    "hs_lastmodifieddate",
    "hs_parent_company_id",
    "hubspot_owner_id",
    "pqa_score",
    "pqa_tier",
]


def capture(monkeypatch: pytest.MonkeyPatch, api: Any) -> list[Request]:
    """Every request the sandbox API module ``api`` answers, as it came over the wire."""
    seen: list[Request] = []
    handle: Callable[[Request], Any] = api.handle

    def recording(request: Request) -> Any:
        seen.append(request)
        return handle(request)

    monkeypatch.setattr(api, "handle", recording)
    return seen


def salesforce(box: Any) -> SalesforceDestination:
    return SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": box.url, "SALESFORCE_SESSION_ID": box.session_id}
    )


def hubspot(box: Any) -> tuple[HubSpotDestination, FakeTime]:
    clock = FakeTime(1_000.0)
    box.hubspot.limiter.monotonic = clock
    dest = HubSpotDestination(box.hubspot_token, base_url=box.url, sleep=clock.sleep, clock=clock)
    return dest, clock


def result_for(key: str, score: int, tier: str) -> AccountResult:
    """A scored account as planning sees it (only score and tier are mapped here)."""
    account = ProductAccount(key, key, {"active_users_28d": 5.0})
    scored = AccountScore(key, key, score, tier, tier, (), (), scored_at=NOW)
    return AccountResult(account, scored, AccountState(key, score, tier, NOW, None, NOW))


def plan_for(
    records: list[CrmRecord], mapping: DestinationMapping, specs: dict[str, FieldSpec]
) -> tuple[list[AccountResult], Any]:
    """Scores for three records that own their domain alone; every other record untargeted."""
    index = build_index(records)
    domains = [
        domain
        for record in records
        for domain in index.domains_of(record.id)[:1]
        if len(index.candidates(domain)) == 1
    ][:3]
    assert len(domains) == 3
    results = [result_for(d, 90 - i, "sales") for i, d in enumerate(domains)]
    report = match_accounts(
        ((r.account.key, r.account.domain, float(r.score.score)) for r in results), index, "skip"
    )
    plan = plan_changes(results, report, {r.id: r for r in records}, mapping, specs)
    return results, plan


# --------------------------------------------------------------------------- Salesforce


def sf_queries(seen: list[Request]) -> list[str]:
    return [r.param("q") or "" for r in seen if r.path.rstrip("/").endswith("/query")]


def test_salesforce_full_read_returns_the_employee_count(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = capture(monkeypatch, sandbox.salesforce)
    records = list(salesforce(sandbox).read_records(SF_FIRMO))
    assert sf_queries(seen) == [SF_PLAIN_SOQL.replace(" FROM", ", NumberOfEmployees FROM")]
    assert records
    for record in records:
        assert list(record.fields) == ["PQA_Score__c", "PQA_Tier__c", "NumberOfEmployees"]
        stored = sandbox.salesforce.get("Account", record.id)
        assert record.fields["NumberOfEmployees"] == stored.get("NumberOfEmployees")
    counts = [r.fields["NumberOfEmployees"] for r in records]
    assert sum(isinstance(c, int) and c > 0 for c in counts) > len(records) / 2


def test_salesforce_without_firmographics_reads_what_it_read_before(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = capture(monkeypatch, sandbox.salesforce)
    dest = salesforce(sandbox)
    records = list(dest.read_records(SF_PLAIN))
    assert sf_queries(seen) == [SF_PLAIN_SOQL]
    assert dest.soql_for(SF_PLAIN) == SF_PLAIN_SOQL
    assert all(list(r.fields) == ["PQA_Score__c", "PQA_Tier__c"] for r in records)


def test_salesforce_incremental_read_returns_the_employee_count(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.salesforce.clock = lambda: NOW
    dest = salesforce(sandbox)
    touched = [r.id for r in dest.read_records(SF_PLAIN)][4:7]
    specs = dest.describe("Account")
    changes = [RecordChange(i, {"PQA_Score__c": 55}, f"k{i}") for i in touched]
    assert sorted(dest.write("Account", changes, specs).written) == sorted(touched)
    seen = capture(monkeypatch, sandbox.salesforce)
    records = list(dest.read_records_modified_since(SF_FIRMO, NOW - timedelta(minutes=1)))
    (soql,) = sf_queries(seen)
    assert soql.startswith(SF_PLAIN_SOQL.replace(" FROM", ", NumberOfEmployees FROM"))
    assert "SystemModstamp >" in soql
    assert sorted(r.id for r in records) == sorted(touched)
    for record in records:
        stored = sandbox.salesforce.get("Account", record.id)
        assert record.fields["NumberOfEmployees"] == stored["NumberOfEmployees"] is not None
        assert record.fields["PQA_Score__c"] == 55


def test_salesforce_writes_never_send_the_employee_count(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = salesforce(sandbox)
    records = list(dest.read_records(SF_FIRMO))
    before = {r.id: r.fields["NumberOfEmployees"] for r in records}
    specs = dest.describe("Account")
    _, plan = plan_for(records, SF_FIRMO, specs)
    assert len({c.record_id for c in plan.changes}) >= 3
    assert all("NumberOfEmployees" not in c.fields for c in plan.changes)
    seen = capture(monkeypatch, sandbox.salesforce)
    result = dest.write("Account", plan.changes, specs)
    assert not result.rejected and not result.not_attempted
    sent = [
        item for r in seen if r.method == "PATCH" for item in (r.json() or {}).get("records", [])
    ]
    assert len(sent) == len(plan.changes)
    assert all("NumberOfEmployees" not in item for item in sent)
    after = {r.id: r.fields["NumberOfEmployees"] for r in dest.read_records(SF_FIRMO)}
    assert after == before


# --------------------------------------------------------------------------- HubSpot


def hs_list_properties(seen: list[Request]) -> list[list[str]]:
    """The ``properties`` of each list request, in the order sent."""
    out = []
    for request in seen:
        if request.method == "GET" and request.path.rstrip("/").endswith("/objects/companies"):
            values = request.query.get("properties", [])
            out.append([p for value in values for p in value.split(",") if p])
    return out


def test_hubspot_list_read_returns_the_employee_count(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest, _ = hubspot(sandbox)
    seen = capture(monkeypatch, sandbox.hubspot)
    records = list(dest.read_records(HS_FIRMO))
    pages = hs_list_properties(seen)
    assert pages and all(p == [*HS_PLAIN_PROPERTIES, "numberofemployees"] for p in pages)
    assert len(records) == len(sandbox.hubspot.ids())
    for record in records:
        assert list(record.fields) == ["pqa_score", "pqa_tier", "numberofemployees"]
        stored = sandbox.hubspot.company(record.id).get("numberofemployees") or None
        assert (record.fields["numberofemployees"] or None) == stored
    assert sum(bool(r.fields["numberofemployees"]) for r in records) > len(records) / 2


def test_hubspot_without_firmographics_reads_what_it_read_before(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest, _ = hubspot(sandbox)
    seen = capture(monkeypatch, sandbox.hubspot)
    records = list(dest.read_records(HS_PLAIN))
    assert all(p == HS_PLAIN_PROPERTIES for p in hs_list_properties(seen))
    assert all(list(r.fields) == ["pqa_score", "pqa_tier"] for r in records)
    stamp_companies(sandbox, sandbox.hubspot.ids()[:3])
    list(dest.read_records_modified_since(HS_PLAIN, NOW))
    assert sandbox.hubspot.searches[-1][1]["properties"] == HS_PLAIN_PROPERTIES


def stamp_companies(box: Any, ids: list[str]) -> None:
    """Give sandbox companies a modification time of ``NOW``, as if written then."""
    text = NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for record_id in ids:
        record = box.hubspot.objects["companies"][record_id]
        record["properties"]["hs_lastmodifieddate"] = text
        record["updatedAt"] = text


def test_hubspot_search_read_returns_the_employee_count(sandbox: Any) -> None:
    dest, _ = hubspot(sandbox)
    touched = sandbox.hubspot.ids()[10:16]
    stamp_companies(sandbox, touched)
    records = list(dest.read_records_modified_since(HS_FIRMO, NOW))
    assert sorted(r.id for r in records) == sorted(touched)
    (search,) = [body for kind, body in sandbox.hubspot.searches if kind == "companies"]
    assert search["properties"] == [*HS_PLAIN_PROPERTIES, "numberofemployees"]
    for record in records:
        stored = sandbox.hubspot.company(record.id).get("numberofemployees") or None
        assert (record.fields["numberofemployees"] or None) == stored
    assert any(r.fields["numberofemployees"] for r in records)


def test_hubspot_incremental_read_falling_back_to_the_list_keeps_the_employee_count(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small search pages make every company modified cheaper to list than to search.
    monkeypatch.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 10)
    dest, _ = hubspot(sandbox)
    ids = sandbox.hubspot.ids()
    stamp_companies(sandbox, ids)
    seen = capture(monkeypatch, sandbox.hubspot)
    records = list(dest.read_records_modified_since(HS_FIRMO, NOW, known_records=len(ids)))
    assert dest.last_read_path is not None and dest.last_read_path.path == "list"
    assert all(p == [*HS_PLAIN_PROPERTIES, "numberofemployees"] for p in hs_list_properties(seen))
    assert sorted(r.id for r in records) == sorted(ids)
    assert sum(bool(r.fields["numberofemployees"]) for r in records) > len(records) / 2


def test_hubspot_writes_never_send_the_employee_count(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest, _ = hubspot(sandbox)
    records = list(dest.read_records(HS_FIRMO))
    before = {r.id: r.fields["numberofemployees"] for r in records}
    specs = dest.describe("companies")
    _, plan = plan_for(records, HS_FIRMO, specs)
    assert len({c.record_id for c in plan.changes}) >= 3
    assert all("numberofemployees" not in c.fields for c in plan.changes)
    seen = capture(monkeypatch, sandbox.hubspot)
    result = dest.write("companies", plan.changes, specs)
    assert not result.rejected and not result.not_attempted
    sent = [
        item
        for r in seen
        if r.method == "POST" and r.path.endswith("/batch/update")
        for item in json.loads(r.body)["inputs"]
    ]
    assert len(sent) == len(plan.changes)
    assert all("numberofemployees" not in item["properties"] for item in sent)
    after = {r.id: r.fields["numberofemployees"] for r in dest.read_records(HS_FIRMO)}
    assert after == before


# --------------------------------------------------------------------------- warehouse

# user_id -> company_size (see USERS in test_warehouse.py): acme.com and eng.acme.com merge,
# gmail.com, the junk and the disposable hosts are skipped, user 7 signs up after AS_OF,
# zeta.com's only value is blank and alpha.com's NULL.
SIZES: dict[int, str | None] = {
    1: "51-200",
    2: " 51-200 ",
    3: "11-50",
    4: "1-10",
    5: "1-10",
    6: "1-10",
    7: "1000+",
    8: "201-500",
    9: "1-10",
    10: "  ",
    11: None,
}
COMPANY_SIZES = {"acme.com": {"51-200": 2, "11-50": 1}, "beta.io": {"201-500": 1}}
WORKSPACE_SIZES = {
    "workspace:10": {"51-200": 2},
    "workspace:11": {"11-50": 1},
    "workspace:30": {"201-500": 1},
}


def set_sizes(engine: sa.Engine, schema: str | None = None) -> None:
    users = sa.table("users", sa.column("user_id"), sa.column("company_size"), schema=schema)
    with engine.begin() as conn:
        for user_id, size in SIZES.items():
            conn.execute(users.update().where(users.c.user_id == user_id).values(company_size=size))


def warehouse_url(tmp_path: Path, backend: str, **options: Any) -> str:
    name = "warehouse.duckdb" if backend == "duckdb" else "warehouse.db"
    url = f"{backend}:///{tmp_path / name}"
    engine = sa.create_engine(url)
    if backend == "sqlite":
        options = {"text_timestamps": True, "integer_admin": True, **options}
    load_warehouse(engine, **options)
    if "company_size" not in options.get("drop_columns", ()) and "users" not in options.get(
        "skip_tables", ()
    ):
        set_sizes(engine)
    engine.dispose()
    return url


def account_keys(source: SqlUsageSource, as_of: datetime = AS_OF) -> set[str]:
    return {a.key for a in source.read_accounts(as_of, UsageReadStats())}


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_company_sizes_per_registrable_domain(tmp_path: Path, backend: str) -> None:
    source = SqlUsageSource(warehouse_url(tmp_path, backend), taxonomy=TAXONOMY)
    sizes = source.read_company_sizes(AS_OF)
    assert sizes == COMPANY_SIZES
    assert set(sizes) <= account_keys(source)
    # A day later user 7 (beta.io) has signed up.
    later = source.read_company_sizes(AS_OF + 2 * DAY)
    assert later["beta.io"] == {"201-500": 1, "1000+": 1}


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_company_sizes_per_workspace(tmp_path: Path, backend: str) -> None:
    source = SqlUsageSource(
        warehouse_url(tmp_path, backend), taxonomy=TAXONOMY, account_level="workspace"
    )
    sizes = source.read_company_sizes(AS_OF)
    assert sizes == WORKSPACE_SIZES
    assert set(sizes) <= account_keys(source)


def test_company_sizes_read_numbers_as_their_digits(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'numeric.duckdb'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, drop_columns=("company_size",))
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE users ADD COLUMN company_size DOUBLE"))
        conn.execute(sa.text("UPDATE users SET company_size = 250 WHERE user_id IN (1, 3)"))
        conn.execute(sa.text("UPDATE users SET company_size = 12.5 WHERE user_id = 8"))
    engine.dispose()
    sizes = SqlUsageSource(url, taxonomy=TAXONOMY).read_company_sizes(AS_OF)
    assert sizes == {"acme.com": {"250": 2}, "beta.io": {"12.5": 1}}


def test_no_company_size_column_reads_nothing(tmp_path: Path) -> None:
    url = warehouse_url(tmp_path, "duckdb", drop_columns=("company_size",))
    assert SqlUsageSource(url, taxonomy=TAXONOMY).read_company_sizes(AS_OF) == {}


def test_a_custom_model_has_no_company_sizes(tmp_path: Path) -> None:
    model = tmp_path / "model.sql"
    model.write_text("SELECT 'acme.com' AS domain, 3 AS total_users")
    url = warehouse_url(tmp_path, "duckdb")
    assert SqlUsageSource(url, taxonomy=TAXONOMY, model=model).read_company_sizes(AS_OF) == {}


def test_company_sizes_fail_in_one_line_without_the_password(tmp_path: Path) -> None:
    url = warehouse_url(tmp_path, "duckdb", skip_tables=("users",))
    with pytest.raises(WarehouseError, match="table 'users' not found"):
        SqlUsageSource(url, taxonomy=TAXONOMY).read_company_sizes(AS_OF)
    remote = "postgresql+psycopg://reader:s3cr3t-pw@127.0.0.1:1/warehouse"
    with pytest.raises(WarehouseError) as caught:
        SqlUsageSource(remote, taxonomy=TAXONOMY).read_company_sizes(AS_OF)
    message = str(caught.value)
    assert "s3cr3t-pw" not in message and "\n" not in message


@pytest.fixture
def postgres_warehouse(postgres_url: str) -> Iterator[tuple[str, str]]:
    schema = f"pls_sync_firmo_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    try:
        load_warehouse(engine, schema=schema, tz_events=True)
        set_sizes(engine, schema)
        yield postgres_url, schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


@pytest.mark.postgres
def test_company_sizes_on_postgres(postgres_warehouse: tuple[str, str]) -> None:
    url, schema = postgres_warehouse
    company = SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema)
    assert company.read_company_sizes(AS_OF) == COMPANY_SIZES
    workspace = SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema, account_level="workspace")
    assert workspace.read_company_sizes(AS_OF) == WORKSPACE_SIZES
    assert set(WORKSPACE_SIZES) <= account_keys(workspace)
