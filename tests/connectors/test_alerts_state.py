"""Alert bookkeeping in the state store: pending, created, rejected, retried."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.alerts_state import (
    CREATED,
    PENDING,
    REJECTED,
    SENDING,
    TaskRejected,
    alert_crm,
    alerts_to_retry,
    get_alert,
    mark_created,
    mark_pending,
    mark_rejected,
    mark_sending,
    pending_or_missing,
    record_alert_crm,
    reopen_alert,
    settle_in_flight,
)
from connectors.state import SqlStateStore
from pls_sync.errors import FatalError
from pls_sync.models import RecordRejection

T0 = datetime(2026, 1, 15, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStateStore]:
    state = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    yield state
    state.close()


def pending(store: SqlStateStore, key: str, **extra: Any) -> bool:
    return mark_pending(
        store, key, destination="salesforce", account_key=key.split(":")[1], **extra
    )


def test_the_table_is_created_on_first_use_next_to_the_store_tables(
    store: SqlStateStore, tmp_path: Path
) -> None:
    assert "alerts" not in sa.inspect(store.engine).get_table_names()
    assert pending_or_missing(store, ["pqa:a.io:1"]) == {"pqa:a.io:1"}
    assert "alerts" in sa.inspect(store.engine).get_table_names()
    assert "runs" in sa.inspect(store.engine).get_table_names()

    pending(store, "pqa:a.io:1", now=T0)
    mark_created(store, "pqa:a.io:1", "00T000000000001AAA", now=T0)
    reopened = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    assert pending_or_missing(reopened, ["pqa:a.io:1", "pqa:b.io:1"]) == {"pqa:b.io:1"}


def test_the_lifecycle_of_one_alert(store: SqlStateStore) -> None:
    key = "pqa:acme.com:2026-01-15"
    payload = {"owner_id": "005x", "subject": "s", "description": "d"}
    assert pending(store, key, record_id="001A", payload=payload, now=T0)
    row = get_alert(store, key)
    assert row is not None
    assert (row.status, row.attempts, row.record_id, row.task_id) == (PENDING, 1, "001A", None)
    assert row.payload == payload and row.created_at == T0 and row.updated_at == T0

    later = T0 + timedelta(hours=4)
    mark_rejected(store, key, "MALFORMED_ID: Owner ID: id value of incorrect type", now=later)
    row = get_alert(store, key)
    assert row is not None and row.status == REJECTED and row.reason is not None
    assert row.updated_at == later and row.created_at == T0
    assert pending_or_missing(store, [key]) == {key}

    new_payload = {**payload, "owner_id": "005y"}
    assert pending(store, key, payload=new_payload, now=later)
    mark_created(store, key, "00T1", now=later)
    row = get_alert(store, key)
    assert row is not None
    assert (row.status, row.attempts, row.task_id, row.reason) == (CREATED, 2, "00T1", None)
    assert row.payload == new_payload and row.record_id == "001A"

    assert not pending(store, key)  # created: nothing more to do, nothing counted
    row_after = get_alert(store, key)
    assert row_after is not None and row_after.attempts == 2
    assert pending_or_missing(store, [key]) == set()
    assert alerts_to_retry(store) == []


def sending_since(store: SqlStateStore, key: str) -> datetime | None:
    row = get_alert(store, key)
    assert row is not None
    return row.sending_since


def test_a_create_sent_without_its_outcome_is_remembered_until_it_has_one(
    store: SqlStateStore,
) -> None:
    key = "pqa:sent.io:2026-01-15"
    assert pending(store, key, now=T0)
    assert sending_since(store, key) is None  # queued, nothing sent yet
    sent = T0 + timedelta(minutes=1)
    mark_sending(store, key, now=sent)
    assert sending_since(store, key) == sent
    (row,) = alerts_to_retry(store)
    assert row.status == SENDING
    # Queued again by a rerun (the run died before its state commit): the mark stays.
    assert pending(store, key, now=sent + timedelta(seconds=5))
    assert sending_since(store, key) == sent
    mark_created(store, key, "T1", now=sent + timedelta(minutes=2))
    assert sending_since(store, key) is None and alerts_to_retry(store) == []


def test_outcomes_need_a_pending_row(store: SqlStateStore) -> None:
    with pytest.raises(FatalError, match="mark_pending first"):
        mark_created(store, "pqa:never.io:1", "00T1")
    with pytest.raises(FatalError, match="mark_pending first"):
        mark_rejected(store, "pqa:never.io:1", "why")
    with pytest.raises(ValueError):
        pending(store, "pqa:x.io:" + "9" * 300)


def test_alerts_to_retry_oldest_first_by_destination_and_attempts(store: SqlStateStore) -> None:
    pending(store, "pqa:b.io:1", now=T0 + timedelta(minutes=2))
    pending(store, "pqa:a.io:1", now=T0 + timedelta(minutes=1))
    mark_rejected(store, "pqa:a.io:1", "INVALID_OPTION")
    mark_pending(store, "pqa:h.io:1", destination="hubspot", account_key="h.io", now=T0)
    pending(store, "pqa:done.io:1", now=T0)
    mark_created(store, "pqa:done.io:1", "00T9")
    for _ in range(2):
        pending(store, "pqa:b.io:1")

    assert [r.key for r in alerts_to_retry(store)] == ["pqa:h.io:1", "pqa:a.io:1", "pqa:b.io:1"]
    assert [r.key for r in alerts_to_retry(store, destination="salesforce")] == [
        "pqa:a.io:1",
        "pqa:b.io:1",
    ]
    assert [r.key for r in alerts_to_retry(store, max_attempts=2)] == ["pqa:h.io:1", "pqa:a.io:1"]
    assert {r.status for r in alerts_to_retry(store)} == {PENDING, REJECTED}


def test_many_keys_are_checked_in_chunks(store: SqlStateStore) -> None:
    keys = [f"pqa:c{n}.io:1" for n in range(1_300)]
    for key in keys[::3]:
        pending(store, key)
        mark_created(store, key, f"00T{key}")
    assert pending_or_missing(store, keys) == set(keys) - set(keys[::3])
    assert pending_or_missing(store, []) == set()


def test_a_rejection_carries_the_crm_reason() -> None:
    rejection = RecordRejection("pqa:a.io:1", "MALFORMED_ID", "Owner ID: bad id", ("OwnerId",))
    error = TaskRejected(rejection)
    assert str(error) == "MALFORMED_ID: Owner ID: bad id"
    assert error.rejection is rejection


def test_database_failures_are_fatal_errors(tmp_path: Path) -> None:
    broken = SqlStateStore(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'state.sqlite'}")
    with pytest.raises(FatalError, match="state store"):
        pending_or_missing(broken, ["pqa:a.io:1"])


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["pending", "created", "rejected"]),
        st.sampled_from([f"pqa:k{n}.io:1" for n in range(5)]),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_bookkeeping_matches_a_model(operations: list[tuple[str, str]], tmp_path: Path) -> None:
    """Whatever the order of events, a created alert stays created and nothing else is."""
    state = SqlStateStore.open(f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.sqlite'}")
    model: dict[str, str] = {}
    attempts: dict[str, int] = {}
    for operation, key in operations:
        if operation == "pending":
            went_ahead = pending(state, key)
            assert went_ahead == (model.get(key) != CREATED)
            if went_ahead:
                model[key] = PENDING
                attempts[key] = attempts.get(key, 0) + 1
        elif key not in model:
            continue  # outcomes only follow an attempt
        elif operation == "created":
            mark_created(state, key, "00T1")
            model[key] = CREATED
        else:
            if model[key] == CREATED:
                continue  # a connector never reports a refusal after a creation
            mark_rejected(state, key, "refused")
            model[key] = REJECTED
    universe = [f"pqa:k{n}.io:1" for n in range(5)]
    assert pending_or_missing(state, universe) == {k for k in universe if model.get(k) != CREATED}
    retry = {r.key: r for r in alerts_to_retry(state)}
    assert set(retry) == {k for k, s in model.items() if s != CREATED}
    assert all(retry[k].status == model[k] and retry[k].attempts == attempts[k] for k in retry)
    state.close()


def crm_moves(state: SqlStateStore) -> None:
    """The CRM a destination's alerts go to is recorded and replaced; moving settles only the
    alerts in flight (``sending``) of that destination."""
    assert alert_crm(state, "salesforce") is None
    record_alert_crm(state, "salesforce", "salesforce:00D000000000001AAA", now=T0)
    record_alert_crm(state, "hubspot", "hubspot:123", now=T0)
    assert alert_crm(state, "salesforce") == "salesforce:00D000000000001AAA"
    for key in ("pqa:a.io:1", "pqa:b.io:1", "pqa:c.io:1"):
        pending(state, key, now=T0)
    mark_sending(state, "pqa:a.io:1", now=T0)
    mark_sending(state, "pqa:b.io:1", now=T0)
    mark_created(state, "pqa:b.io:1", "00T1", now=T0)
    mark_pending(state, "pqa:h.io:1", destination="hubspot", account_key="h.io", now=T0)
    mark_sending(state, "pqa:h.io:1", now=T0)

    assert settle_in_flight(state, "salesforce", "sent to the old org", now=T0) == 1
    record_alert_crm(state, "salesforce", "salesforce:00D000000000002AAA", now=T0)
    assert alert_crm(state, "salesforce") == "salesforce:00D000000000002AAA"
    settled = get_alert(state, "pqa:a.io:1")
    assert settled is not None and (settled.status, settled.reason) == (
        CREATED,
        "sent to the old org",
    )
    assert {r.key: r.status for r in alerts_to_retry(state)} == {
        "pqa:c.io:1": PENDING,
        "pqa:h.io:1": SENDING,
    }

    # A backfill for the new org queues created alerts again, and unknown ones anew.
    text = {"subject": "PQA", "body": "now"}
    reopen_alert(state, "pqa:b.io:1", destination="salesforce", account_key="b.io", payload=text)
    reopen_alert(state, "pqa:d.io:1", destination="salesforce", account_key="d.io", payload=text)
    queued = {r.key: r for r in alerts_to_retry(state, destination="salesforce")}
    assert sorted(queued) == ["pqa:b.io:1", "pqa:c.io:1", "pqa:d.io:1"]
    assert queued["pqa:b.io:1"].status == PENDING and queued["pqa:b.io:1"].payload == text
    assert queued["pqa:b.io:1"].task_id is None and queued["pqa:d.io:1"].payload == text


def test_a_destination_moved_to_another_crm(store: SqlStateStore) -> None:
    crm_moves(store)


@pytest.mark.postgres
def test_on_postgres(postgres_url: str) -> None:
    schema = f"alerts_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        engine = sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
        state = SqlStateStore.open(postgres_url, engine=engine)
        pending(state, "pqa:pg.io:1", payload={"owner_id": "005"}, now=T0)
        mark_rejected(state, "pqa:pg.io:1", "refused")
        (row,) = alerts_to_retry(state)
        assert row.created_at == T0 and row.payload == {"owner_id": "005"}
        pending(state, "pqa:pg.io:1")
        mark_sending(state, "pqa:pg.io:1", now=T0)
        assert sending_since(state, "pqa:pg.io:1") == T0
        mark_created(state, "pqa:pg.io:1", "00T1")
        assert pending_or_missing(state, ["pqa:pg.io:1", "pqa:pg.io:2"]) == {"pqa:pg.io:2"}
        crm_moves(state)
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
