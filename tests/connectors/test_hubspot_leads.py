"""MQL contacts and idempotent alert tasks against the HubSpot sandbox, with the real client.

hubspot-api-client talks to the sandbox (``tests/conftest.py``) over loopback; pacing, backoff,
the sandbox's rate-limit windows and its clock (record stamps, the search index's lag) share one
fake clock, so no test sleeps. The sandbox's search lags writes as HubSpot's does ("It may take a
few moments for newly created or updated CRM objects to appear in search results"):
https://developers.hubspot.com/docs/api-reference/latest/crm/search-the-crm

HubSpot documents unique-value properties for companies, deals, tickets, custom objects and
contacts, not for tasks ("Historically, HubSpot has provided unique property support
for Companies, Deals, Tickets, and Custom Objects"):
https://developers.hubspot.com/changelog/unique-properties-for-contacts
so a task's alert key cannot make HubSpot refuse a second create; after any failure once the
create may have been sent, the task is looked up only past the search lag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors import alerts_state
from connectors.alerts_state import (
    TaskRejected,
    alerts_to_retry,
    get_alert,
    mark_created,
    mark_pending,
    mark_rejected,
    pending_or_missing,
)
from connectors.hubspot import HubSpotDestination
from connectors.hubspot_leads import (
    CONTACT_SOURCE,
    OUTCOME_UNKNOWN,
    TASK_TO_COMPANY,
    create_hubspot_alert,
    find_alert_task,
    read_hubspot_mqls,
)
from connectors.leads import HubSpotAlerts, StateAlertLedger
from connectors.state import SqlStateStore
from pls_sync.alerts import send_alerts
from pls_sync.errors import FatalError, RetriableError
from pls_sync.matching import MatchReport
from pls_sync.models import CrmRecord
from tests.connectors.test_hubspot import http
from tests.fakes import FakeTime

MQL = "marketingqualifiedlead"


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def box(sandbox: Any, clock: FakeTime) -> Any:
    sandbox.hubspot.limiter.monotonic = clock
    sandbox.hubspot.clock = clock
    return sandbox


@pytest.fixture
def store(tmp_path: Path) -> SqlStateStore:
    return SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")


def destination(box: Any, clock: FakeTime, **options: Any) -> HubSpotDestination:
    return HubSpotDestination(
        box.hubspot_token, base_url=box.url, sleep=clock.sleep, clock=clock, **options
    )


def contacts(box: Any) -> dict[str, dict[str, str]]:
    return {k: r["properties"] for k, r in box.hubspot.objects["contacts"].items()}


def add_contacts(box: Any, count: int, **values: str) -> None:
    """Seed contacts straight into the portal (thousands in milliseconds)."""
    api = box.hubspot
    for n in range(count):
        record = api._new_record("contacts", {}, created=datetime(2025, 1, 1, tzinfo=UTC))
        record["properties"].update({"email": f"p{n}@bulk{n % 7}.io", **values})


def tasks_with_key(box: Any, key: str) -> list[dict[str, Any]]:
    return [
        r
        for r in box.hubspot.objects["tasks"].values()
        if r["properties"].get("pqa_alert_key") == key
    ]


def a_company(box: Any) -> str:
    return box.hubspot.ids("companies")[0]


def an_owner(box: Any, index: int = 0) -> str:
    return str(box.hubspot.owners[index][0])


# --------------------------------------------------------------------------- MQLs


def test_mqls_are_searched_with_the_lifecycle_filter(box: Any, clock: FakeTime) -> None:
    expected = {
        (CONTACT_SOURCE, key, props["email"])
        for key, props in contacts(box).items()
        if props.get("lifecyclestage") == MQL and props.get("email")
    }
    assert len(expected) > 5
    box.hubspot.searches.clear()

    got = list(read_hubspot_mqls(destination(box, clock)))

    assert set(got) == expected and len(got) == len(expected)
    assert box.counts().get("hs.contacts.list", 0) == 0  # no full scan
    searches = box.hubspot.searches
    assert len(searches) == -(-len(expected) // 200)
    object_type, body = searches[0]
    assert object_type == "contacts" and {t for t, _ in searches} == {"contacts"}
    assert body["limit"] == 200 and body["properties"] == ["email"]
    assert all(b["filterGroups"] == body["filterGroups"] for _, b in searches)
    assert body["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "lifecyclestage", "operator": "EQ", "value": MQL},
                {"propertyName": "email", "operator": "HAS_PROPERTY"},
            ]
        }
    ]


def create_mql_property(box: Any, name: str = "pqa_mql") -> None:
    """A contact checkbox property ``name`` on the sandbox portal (an MQL flag)."""
    http(
        box,
        "POST",
        "/crm/v3/properties/contacts",
        {
            "name": name,
            "label": "MQL (pls-sync)",
            "type": "enumeration",
            "fieldType": "booleancheckbox",
            "groupName": "contactinformation",
            "options": [
                {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
            ],
        },
    )


def test_a_configured_property_is_ored_in_a_second_filter_group(box: Any, clock: FakeTime) -> None:
    create_mql_property(box)
    others = [k for k, p in contacts(box).items() if p.get("lifecyclestage") != MQL][:3]
    for key in others:
        box.hubspot.objects["contacts"][key]["properties"]["pqa_mql"] = "true"
    box.hubspot.objects["contacts"][
        next(
            k
            for k, p in contacts(box).items()
            if p.get("lifecyclestage") != MQL and k not in others
        )
    ]["properties"]["pqa_mql"] = "false"
    box.hubspot.searches.clear()

    got = {
        record_id
        for _, record_id, _ in read_hubspot_mqls(destination(box, clock), mql_property="pqa_mql")
    }

    by_stage = {k for k, p in contacts(box).items() if p.get("lifecyclestage") == MQL}
    assert got == by_stage | set(others)
    groups = box.hubspot.searches[0][1]["filterGroups"]
    assert len(groups) == 2
    assert groups[1]["filters"][0] == {"propertyName": "pqa_mql", "operator": "EQ", "value": "true"}


def test_mql_search_pages_at_200(box: Any, clock: FakeTime) -> None:
    add_contacts(box, 450, lifecyclestage=MQL)
    expected = sum(1 for p in contacts(box).values() if p.get("lifecyclestage") == MQL)
    box.reset_counts()
    got = list(read_hubspot_mqls(destination(box, clock)))
    assert len(got) == expected > 450
    assert box.counts()["hs.contacts.search"] == -(-expected // 200)
    assert all(body["limit"] == 200 for _, body in box.hubspot.searches)


def test_above_the_search_cap_the_search_goes_on_in_windows_of_contact_ids(
    box: Any, clock: FakeTime
) -> None:
    add_contacts(box, 10_050, lifecyclestage=MQL)
    add_contacts(box, 30, lifecyclestage="lead")
    expected = {
        (CONTACT_SOURCE, k, p["email"])
        for k, p in contacts(box).items()
        if p.get("lifecyclestage") == MQL and p.get("email")
    }
    assert len(expected) > 10_000
    box.reset_counts()

    got = list(read_hubspot_mqls(destination(box, clock)))

    assert set(got) == expected and len(got) == len(expected)
    counts = box.counts()
    # 10,000 in the first window (50 pages), the rest above its last id; never a list scan.
    assert counts["hs.contacts.search"] == 50 + -(-(len(expected) - 10_000) // 200)
    assert counts.get("hs.contacts.list", 0) == 0
    windows = [body for _, body in box.hubspot.searches if body.get("after") in (None, "0")]
    assert len(windows) == 2
    assert all(
        {"propertyName": "hs_object_id", "operator": "GT", "value": got[9_999][1]}
        in group["filters"]
        for group in windows[1]["filterGroups"]
    )


# --------------------------------------------------------------------------- alert tasks


def test_alert_creation_is_idempotent_by_key(box: Any, clock: FakeTime) -> None:
    company = a_company(box)
    owner = an_owner(box)
    dest = destination(box, clock)
    when = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
    kwargs: dict[str, Any] = {
        "company_id": company,
        "owner_id": owner,
        "subject": "PQA: acme.com entered the sales tier (score 86)",
        "body": "Signals: 9 active users\nBuyers: Jo (VP Eng)",
        "key": "pqa:acme.com:2026-01-15",
        "now": when,
    }
    task_id, created = create_hubspot_alert(dest, **kwargs)
    assert created
    clock.sleep(box.hubspot.search_lag_seconds)  # the task reaches the search index
    assert create_hubspot_alert(dest, **kwargs) == (task_id, False)

    (task,) = tasks_with_key(box, "pqa:acme.com:2026-01-15")
    assert task["id"] == task_id
    props = task["properties"]
    assert props["hs_task_subject"] == kwargs["subject"]
    assert props["hs_task_body"] == kwargs["body"]
    assert props["hs_task_status"] == "NOT_STARTED" and props["hs_task_priority"] == "HIGH"
    assert props["hubspot_owner_id"] == owner
    assert props["hs_timestamp"] == "2026-01-15T09:30:00.000Z"
    assert task["associations"]["companies"]["results"][0]["id"] == company
    key_searches = [b for t, b in box.hubspot.searches if t == "tasks"]
    assert key_searches[0]["filterGroups"] == [
        {"filters": [{"propertyName": "pqa_alert_key", "operator": "EQ", "value": kwargs["key"]}]}
    ]
    assert TASK_TO_COMPANY == 192


def test_a_crash_between_create_and_commit_leaves_exactly_one_task(
    box: Any, clock: FakeTime, store: SqlStateStore
) -> None:
    key = "pqa:crash.io:2026-01-15"
    args: dict[str, Any] = {
        "company_id": a_company(box),
        "owner_id": an_owner(box, 1),
        "subject": "PQA alert",
        "body": "score 90",
        "key": key,
    }

    def run(crash: bool) -> None:
        for todo in sorted(pending_or_missing(store, [key])):
            assert mark_pending(
                store, todo, destination="hubspot", account_key="crash.io", payload=args
            )
            task_id, _ = create_hubspot_alert(destination(box, clock), **args)
            if crash:
                raise SystemExit("killed between task creation and state commit")
            mark_created(store, todo, task_id)

    with pytest.raises(SystemExit):
        run(crash=True)
    clock.sleep(3600)  # the rerun comes with the next scheduled run, past the search lag
    run(crash=False)
    run(crash=False)

    (task,) = tasks_with_key(box, key)
    row = get_alert(store, key)
    assert row is not None and row.status == "created" and row.task_id == task["id"]
    assert row.attempts == 2


def test_a_rejected_task_is_recorded_and_retried_later(
    box: Any, clock: FakeTime, store: SqlStateStore
) -> None:
    key = "pqa:reject.io:2026-01-15"
    company = a_company(box)
    payload: dict[str, Any] = {"owner_id": "999", "subject": "PQA alert", "body": "score 91"}
    mark_pending(
        store,
        key,
        destination="hubspot",
        account_key="reject.io",
        record_id=company,
        payload=payload,
    )
    dest = destination(box, clock)
    with pytest.raises(TaskRejected) as caught:
        create_hubspot_alert(dest, company_id=company, key=key, **payload)
    rejection = caught.value.rejection
    assert rejection.code == "INVALID_OPTION" and rejection.fields == ("hubspot_owner_id",)
    mark_rejected(store, key, str(caught.value))
    assert tasks_with_key(box, key) == []

    (retry,) = alerts_to_retry(store, destination="hubspot")
    assert retry.status == "rejected" and "INVALID_OPTION" in (retry.reason or "")
    fixed = {**retry.payload, "owner_id": an_owner(box, 2)}
    mark_pending(store, key, destination="hubspot", account_key="reject.io", payload=fixed)
    task_id, created = create_hubspot_alert(dest, company_id=str(retry.record_id), key=key, **fixed)
    mark_created(store, key, task_id)
    assert created and [t["id"] for t in tasks_with_key(box, key)] == [task_id]
    assert alerts_to_retry(store) == []


def test_a_task_on_a_missing_company_is_rejected(box: Any, clock: FakeTime) -> None:
    with pytest.raises(TaskRejected, match="associations are invalid"):
        create_hubspot_alert(
            destination(box, clock),
            company_id="1",
            owner_id=an_owner(box),
            subject="s",
            body="b",
            key="pqa:gone.io:2026-01-15",
        )


def test_a_create_whose_answer_is_lost_settles_and_is_not_sent_again_in_the_run(
    box: Any, clock: FakeTime
) -> None:
    """HubSpot's search finds a new task only after a lag: a lookup right after a lost answer
    could miss the task and a second create would duplicate it. The create is not confirmed
    in this run; a later run (past the lag) looks it up first, then creates it at most once."""
    box.faults.add("server_error", endpoint="hs.tasks.create", times=1)
    key = "pqa:lost.io:2026-01-15"
    args: dict[str, Any] = {
        "company_id": a_company(box),
        "owner_id": an_owner(box),
        "subject": "s",
        "body": "b",
        "key": key,
    }
    with pytest.raises(RetriableError) as caught:
        create_hubspot_alert(destination(box, clock), **args)
    assert caught.value.code == OUTCOME_UNKNOWN
    assert box.counts()["hs.tasks.create"] == 1 and box.counts()["hs.tasks.search"] == 1

    task_id, created = create_hubspot_alert(destination(box, clock), **args)  # a later run
    assert created and [t["id"] for t in tasks_with_key(box, key)] == [task_id]
    assert box.counts()["hs.tasks.create"] == 2
    assert box.counts()["hs.tasks.search"] == 2  # looked the key up again before re-sending


def test_a_missing_key_property_stops_with_a_fatal_error(box: Any, clock: FakeTime) -> None:
    with pytest.raises(FatalError, match="no_such_key"):
        create_hubspot_alert(
            destination(box, clock),
            company_id=a_company(box),
            owner_id=an_owner(box),
            subject="s",
            body="b",
            key="k",
            key_property="no_such_key",
        )
    assert "hs.tasks.create" not in box.counts()


def test_an_unknown_mql_property_stops_with_a_fatal_error(box: Any, clock: FakeTime) -> None:
    with pytest.raises(FatalError, match="no_such_flag"):
        list(read_hubspot_mqls(destination(box, clock), mql_property="no_such_flag"))


# --------------------------------------------------------------------------- unknown outcomes


class ClockedLedger(StateAlertLedger):
    """The state-store ledger, stamping "sending" with the test's clock instead of today's."""

    def __init__(self, store: SqlStateStore, clock: FakeTime) -> None:
        super().__init__(store)
        self.clock = clock

    def mark_sending(self, key: str) -> None:
        alerts_state.mark_sending(self.store, key, now=datetime.fromtimestamp(self.clock(), UTC))


# An answer that never arrives in time: the sandbox holds it 1 s, the client waits 0.3 s.
LATE = {"delay": 1.0}


@pytest.mark.parametrize("kind", ["answer_lost", "answer_cut", "answer_late", "answer_not_json"])
def test_a_create_whose_outcome_is_unknown_settles_and_leaves_exactly_one_task(
    box: Any, clock: FakeTime, store: SqlStateStore, kind: str
) -> None:
    """HubSpot applies the create and the answer goes wrong. The run leaves the alert settling;
    a rerun seconds later neither looks it up nor sends it (the search would not show the task
    yet); a run past the lookup lag finds the one task by its key."""
    box.hubspot.search_lag_seconds = 5.0
    box.faults.add(kind, endpoint="hs.tasks.create", times=1, **(LATE if "late" in kind else {}))
    company = a_company(box)
    key = f"pqa:{kind}.io:1"
    ledger = ClockedLedger(store, clock)
    ledger.mark_pending(
        key,
        destination="hubspot",
        account_key=f"{kind}.io",
        record_id=company,
        payload={"subject": "PQA alert", "body": "score 90"},
    )
    sink = HubSpotAlerts(destination(box, clock, timeout=(1.0, 0.3)), "pqa_alert_key")
    record = CrmRecord(id=company, domain_values=(), fields={}, owner_id=an_owner(box))

    def run() -> dict[str, Any]:
        return send_alerts(
            "hubspot",
            sink,
            ledger,
            MatchReport(matches={}),
            {company: record},
            clock=lambda: datetime.fromtimestamp(clock(), UTC),
        )

    assert run()["settling"] == 1
    assert len(tasks_with_key(box, key)) == 1  # HubSpot made it; only the answer went wrong
    assert (box.counts()["hs.tasks.search"], box.counts()["hs.tasks.create"]) == (1, 1)
    clock.sleep(1.0)
    assert run()["settling"] == 1
    assert (box.counts()["hs.tasks.search"], box.counts()["hs.tasks.create"]) == (1, 1)
    clock.sleep(sink.lookup_lag_seconds)
    later = run()
    assert (later["found_existing"], later["created"], later["settling"]) == (1, 0, 0)
    (task,) = tasks_with_key(box, key)
    row = get_alert(store, key)
    assert row is not None and row.status == "created" and row.task_id == task["id"]
    assert box.counts()["hs.tasks.create"] == 1


def test_a_lookup_right_after_a_lost_answer_would_miss_the_task_so_nothing_is_resent(
    box: Any, clock: FakeTime
) -> None:
    """Issue 13, failure 2: a lost answer, then a search by the key 0-1 s later with a 5 s search
    lag, found nothing and created the task again. The search does miss it; the create is not
    sent again, and past the lag the search finds the one task."""
    box.hubspot.search_lag_seconds = 5.0
    box.faults.add("answer_lost", endpoint="hs.tasks.create", times=1)
    key = "pqa:lag.io:1"
    dest = destination(box, clock)
    args: dict[str, Any] = {
        "company_id": a_company(box),
        "owner_id": an_owner(box),
        "subject": "s",
        "body": "b",
        "key": key,
    }
    with pytest.raises(RetriableError) as caught:
        create_hubspot_alert(dest, **args)
    assert caught.value.code == OUTCOME_UNKNOWN
    clock.sleep(1.0)
    (task,) = tasks_with_key(box, key)
    assert find_alert_task(dest, key) is None  # what a retry in the same run would have seen
    assert box.counts()["hs.tasks.create"] == 1
    clock.sleep(5.0)
    assert find_alert_task(dest, key) == task["id"]
