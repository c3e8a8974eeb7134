"""The SQL state store, run against SQLite (native and portable upserts) and PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, insert, text

from connectors.crm_snapshot import SnapshottingDestination
from connectors.state import SCHEMA_VERSION, SqlStateStore, schema_version
from pls_sync.errors import FatalError
from pls_sync.models import CrmRecord, OwnedRecord, RecordRejection
from pls_sync.ports import AccountState, TierTransition

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))


@dataclass
class Backend:
    """A database for one test, and a way to open any number of stores on it."""

    name: str
    url: str
    engine_factory: Callable[[], Engine] | None = None
    portable: bool = False
    stores: list[SqlStateStore] = field(default_factory=list)

    def new_store(self) -> SqlStateStore:
        """A separate store (its own engine and pool), as a second process would have."""
        engine = self.engine_factory() if self.engine_factory else None
        store = SqlStateStore.open(self.url, engine=engine)
        if self.portable:
            # Exercise the fallback other dialects take, on a database we have here.
            store._native_upsert = False
        self.stores.append(store)
        return store

    def close(self) -> None:
        """Dispose every engine opened for the test."""
        for store in self.stores:
            store.close()


@pytest.fixture(
    params=["sqlite", "sqlite-portable", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test once per backend; PostgreSQL in a fresh schema dropped afterwards."""
    if request.param != "postgres":
        url = f"sqlite:///{tmp_path / 'state' / 'state.sqlite'}"
        box = Backend(request.param, url, portable=request.param == "sqlite-portable")
        yield box
        box.close()
        return
    server = os.environ.get("PLS_SYNC_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("PLS_SYNC_TEST_POSTGRES_URL is not set")
    schema = f"pls_state_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def engine_factory() -> Engine:
        return create_engine(server, connect_args={"options": f"-csearch_path={schema}"})

    box = Backend("postgres", server, engine_factory)
    try:
        yield box
    finally:
        box.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(backend: Backend) -> SqlStateStore:
    """A store with its tables created."""
    return backend.new_store()


def state(key: str, score: int, tier: str, at: datetime, **kwargs: object) -> AccountState:
    """An account state scored at ``at``."""
    return AccountState(key, score, tier, scored_at=at, **kwargs)  # type: ignore[arg-type]


# --- schema -------------------------------------------------------------------------------


def test_open_creates_the_sqlite_folder_tables_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.sqlite"
    store = SqlStateStore.open(f"sqlite:///{path}")
    try:
        assert path.is_file()
        assert store.schema_version() == SCHEMA_VERSION
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        store.begin_run("r1", "run", T0)
    finally:
        store.close()
    again = SqlStateStore.open(f"sqlite:///{path}")
    try:
        assert again.schema_version() == SCHEMA_VERSION
        assert [r.run_id for r in again.recent_runs()] == ["r1"]
    finally:
        again.close()


def test_in_memory_sqlite_is_shared_across_threads() -> None:
    store = SqlStateStore.open("sqlite://")
    try:
        worker = threading.Thread(target=store.begin_run, args=("r1", "run", T0))
        worker.start()
        worker.join()
        assert [r.run_id for r in store.recent_runs()] == ["r1"]
    finally:
        store.close()


def test_a_newer_schema_is_refused(backend: Backend, store: SqlStateStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION + 1, applied_at=T0))
    with pytest.raises(FatalError, match="schema version 2"):
        backend.new_store()


# --- runs ---------------------------------------------------------------------------------


def test_run_lifecycle(store: SqlStateStore) -> None:
    store.begin_run("r1", "run", T0)
    [running] = store.recent_runs()
    assert (running.run_id, running.command, running.status) == ("r1", "run", "running")
    assert running.started_at == T0 and running.finished_at is None
    assert store.last_successful_run() is None

    summary = {"accounts": 3, "tiers": {"sales": 1}, "as_of": T0, "top": ["a.com", "b.com"]}
    store.finish_run("r1", "succeeded", T0 + timedelta(seconds=5), summary)
    store.begin_run("r2", "plan", T0 + timedelta(hours=1))
    store.finish_run(
        "r2", "failed", T0 + timedelta(hours=1, seconds=1), {}, "boom: password=hunter22 bad"
    )

    newest, oldest = store.recent_runs()
    assert (newest.run_id, newest.status, newest.summary) == ("r2", "failed", {})
    assert newest.error is not None and "hunter22" not in newest.error and "boom" in newest.error
    assert oldest.summary == {
        "accounts": 3,
        "tiers": {"sales": 1},
        "as_of": T0.isoformat(),
        "top": ["a.com", "b.com"],
    }
    assert oldest.finished_at == T0 + timedelta(seconds=5)
    assert [r.run_id for r in store.recent_runs(limit=1)] == ["r2"]
    last = store.last_successful_run()
    assert last is not None and last.run_id == "r1"


def test_finishing_an_unknown_run_is_an_error(store: SqlStateStore) -> None:
    with pytest.raises(KeyError):
        store.finish_run("nope", "succeeded", T0, {})


# --- account states, history, transitions ---------------------------------------------------


def test_account_states_round_trip_as_aware_utc(store: SqlStateStore) -> None:
    since = datetime(2024, 4, 1, 9, 30, tzinfo=IST)
    states = [
        AccountState("acme.com", 85, "sales", since, since, datetime(2024, 5, 1, 4, tzinfo=PST), 7),
        AccountState("bare.io", 10, "self_serve"),
    ]
    store.save_account_states("r1", states, [])
    loaded = store.load_account_states()
    assert loaded == {s.key: s for s in states}
    acme = loaded["acme.com"]
    for value in (acme.tier_since, acme.qualified_since, acme.scored_at):
        assert value is not None and value.tzinfo == UTC
    assert acme.scored_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert loaded["bare.io"].tier_since is None and loaded["bare.io"].score_change is None


def test_naive_datetimes_are_taken_as_utc(store: SqlStateStore) -> None:
    store.save_account_states("r1", [state("a.com", 1, "self_serve", datetime(2024, 1, 2, 3))], [])
    assert store.load_account_states()["a.com"].scored_at == datetime(2024, 1, 2, 3, tzinfo=UTC)


def test_states_are_upserted_and_others_kept(store: SqlStateStore) -> None:
    store.save_account_states(
        "r1", [state("a.com", 50, "self_serve", T0), state("b.com", 70, "success", T0)], []
    )
    later = T0 + timedelta(days=1)
    store.save_account_states(
        "r2",
        [state("a.com", 10, "self_serve", T0), state("a.com", 90, "sales", later, score_change=40)],
        [],
    )
    loaded = store.load_account_states()
    assert loaded["a.com"] == state("a.com", 90, "sales", later, score_change=40)
    assert loaded["b.com"] == state("b.com", 70, "success", T0)
    assert store.score_history_for("a.com") == [(later, 90, "sales"), (T0, 50, "self_serve")]


def test_history_and_transitions_are_appended(store: SqlStateStore) -> None:
    for day in range(5):
        at = T0 + timedelta(days=day)
        tier = "sales" if day >= 3 else "success"
        transitions = (
            [TierTransition("a.com", "success", "sales", 80 + day, at)] if day == 3 else []
        )
        if day == 0:
            transitions = [TierTransition("a.com", None, "success", 60, at)]
        store.save_account_states(f"r{day}", [state("a.com", 60 + 5 * day, tier, at)], transitions)

    history = store.score_history_for("a.com", limit=3)
    assert history == [
        (T0 + timedelta(days=4), 80, "sales"),
        (T0 + timedelta(days=3), 75, "sales"),
        (T0 + timedelta(days=2), 70, "success"),
    ]
    assert len(store.score_history_for("a.com")) == 5
    assert store.score_history_for("other.com") == []
    assert store.transitions_since(T0) == [
        TierTransition("a.com", None, "success", 60, T0),
        TierTransition("a.com", "success", "sales", 83, T0 + timedelta(days=3)),
    ]
    assert store.transitions_since(T0 + timedelta(days=1)) == [
        TierTransition("a.com", "success", "sales", 83, T0 + timedelta(days=3))
    ]
    assert store.prune_history(T0 + timedelta(days=2)) == 2
    assert len(store.score_history_for("a.com")) == 3


def test_an_older_store_gets_the_indexes_it_lacks(backend: Backend) -> None:
    store = backend.new_store()
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_score_history_scored_at"))
    backend.new_store()  # opening it again creates what is missing
    # The catalogue itself, not SQLAlchemy's reflection (which the BigQuery dialect's own
    # unnest function, once imported, makes warn on PostgreSQL).
    catalogue = (
        "SELECT indexname FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = 'score_history'"
        if store.engine.dialect.name == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'score_history'"
    )
    with store.engine.connect() as conn:
        names = set(conn.execute(text(catalogue)).scalars())
    assert "ix_score_history_scored_at" in names


def test_a_failed_save_leaves_nothing_behind(store: SqlStateStore) -> None:
    store.save_account_states("r1", [state("a.com", 50, "success", T0)], [])
    bad = TierTransition("a.com", "success", None, 90, T0)  # type: ignore[arg-type]
    with pytest.raises(FatalError, match="save account states failed"):
        store.save_account_states("r2", [state("a.com", 90, "sales", T0)], [bad])
    assert store.load_account_states()["a.com"].score == 50
    assert len(store.score_history_for("a.com")) == 1


def test_many_states_save_in_batches(store: SqlStateStore) -> None:
    count = 25_000  # more than two executemany batches
    states = [state(f"acct{i}.com", i % 101, "self_serve", T0) for i in range(count)]
    transitions = [
        TierTransition(f"acct{i}.com", None, "sales", 90, T0) for i in range(0, count, 7)
    ]
    store.save_account_states("r1", states, transitions)
    store.save_account_states("r2", states, [])
    loaded = store.load_account_states()
    assert len(loaded) == count
    assert loaded["acct24999.com"] == states[-1]
    assert len(store.transitions_since(T0)) == len(transitions)
    assert [score for _, score, _ in store.score_history_for("acct123.com")] == [22, 22]


aware_datetimes = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=UTC).astimezone(
        timezone(timedelta(minutes=minutes))
    ),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 1, 1)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(moments=st.lists(aware_datetimes, min_size=1, max_size=8))
def test_history_orders_instants_whatever_their_offsets(
    store: SqlStateStore, moments: list[datetime]
) -> None:
    key = f"{uuid.uuid4().hex}.com"
    for index, moment in enumerate(moments):
        store.save_account_states(f"r{index}", [state(key, index, "success", moment)], [])
    history = store.score_history_for(key, limit=len(moments))
    got = [(at, score) for at, score, _ in history]
    # Newest first; equal instants come back newest-written first.
    expected = sorted(
        ((m.astimezone(UTC), i) for i, m in enumerate(moments)), key=lambda p: (p[0], p[1])
    )[::-1]
    assert got == expected
    assert all(at.tzinfo == UTC for at, _ in got)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(moment=aware_datetimes)
def test_datetimes_round_trip_to_the_same_instant_in_utc(
    store: SqlStateStore, moment: datetime
) -> None:
    store.heartbeat("scheduler", moment, {"n": 1})
    beat = store.last_heartbeat("scheduler")
    assert beat is not None
    assert beat[0] == moment and beat[0].tzinfo == UTC


# --- rejections ---------------------------------------------------------------------------


def rejection(record_id: str, code: str = "INVALID", message: str = "bad value") -> RecordRejection:
    """A rejection of ``record_id`` on one field."""
    return RecordRejection(record_id, code, message, ("PQA_Score__c",))


def test_rejections_count_attempts_and_keep_first_seen(store: SqlStateStore) -> None:
    t1, t2, t3 = T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    store.record_rejections("r1", "salesforce", [rejection("001A"), rejection("001B")], t1)
    store.record_rejections("r1", "hubspot", [rejection("9")], t1)
    store.record_rejections(
        "r2", "salesforce", [rejection("001A", "LOCKED", "row lock"), rejection("001A")], t2
    )

    by_id = {r.record_id: r for r in store.open_rejections("salesforce")}
    assert set(by_id) == {"001A", "001B"}
    again = by_id["001A"]
    assert (again.attempts, again.first_seen_at, again.last_seen_at) == (2, t1, t2)
    assert (again.code, again.message, again.run_id) == ("INVALID", "bad value", "r2")
    assert again.fields == ("PQA_Score__c",)
    assert by_id["001B"].attempts == 1
    assert len(store.open_rejections()) == 3

    store.resolve_rejections("salesforce", ["001A", "unknown"])
    assert [r.record_id for r in store.open_rejections("salesforce")] == ["001B"]
    assert [r.record_id for r in store.open_rejections("hubspot")] == ["9"]

    # Rejected again after it was written: a new episode.
    store.record_rejections("r3", "salesforce", [rejection("001A", "LOCKED", "row lock")], t3)
    reopened = {r.record_id: r for r in store.open_rejections("salesforce")}["001A"]
    assert (reopened.attempts, reopened.first_seen_at, reopened.code) == (1, t3, "LOCKED")


def test_rejection_messages_are_redacted(store: SqlStateStore) -> None:
    leaked = rejection("1", message="Authorization: Bearer abc.def-ghi failed")
    store.record_rejections("r1", "hubspot", [leaked], T0)
    [kept] = store.open_rejections()
    assert "abc.def-ghi" not in kept.message


def test_empty_rejection_calls_do_nothing(store: SqlStateStore) -> None:
    store.record_rejections("r1", "hubspot", [], T0)
    store.resolve_rejections("hubspot", [])
    assert store.open_rejections() == []


# --- locks --------------------------------------------------------------------------------


def test_lock_lifecycle(store: SqlStateStore) -> None:
    assert store.lock_holder("sync", now=T0) is None
    assert store.acquire_lock("sync", "alpha", 60, now=T0)
    assert store.lock_holder("sync", now=T0) == ("alpha", T0 + timedelta(seconds=60))
    assert not store.acquire_lock("sync", "beta", 60, now=T0 + timedelta(seconds=30))
    # The holder may take it again, which extends its lease.
    assert store.acquire_lock("sync", "alpha", 60, now=T0 + timedelta(seconds=30))
    assert store.lock_holder("sync", now=T0)[1] == T0 + timedelta(seconds=90)  # type: ignore[index]
    assert store.renew_lock("sync", "alpha", 60, now=T0 + timedelta(seconds=60))
    assert not store.renew_lock("sync", "beta", 60, now=T0 + timedelta(seconds=60))
    assert not store.acquire_lock("sync", "beta", 60, now=T0 + timedelta(seconds=119))

    # Expired: another owner takes it over, and the old owner can neither renew nor release it.
    assert store.lock_holder("sync", now=T0 + timedelta(seconds=120)) is None
    assert store.acquire_lock("sync", "beta", 60, now=T0 + timedelta(seconds=120))
    assert store.lock_holder("sync", now=T0 + timedelta(seconds=121))[0] == "beta"  # type: ignore[index]
    assert not store.renew_lock("sync", "alpha", 60, now=T0 + timedelta(seconds=121))
    assert not store.release_lock("sync", "alpha")
    assert store.lock_holder("sync", now=T0 + timedelta(seconds=121))[0] == "beta"  # type: ignore[index]

    assert store.release_lock("sync", "beta")
    assert store.lock_holder("sync", now=T0 + timedelta(seconds=121)) is None
    assert store.acquire_lock("sync", "alpha", 60, now=T0 + timedelta(seconds=122))


def test_locks_are_independent_by_name(store: SqlStateStore) -> None:
    assert store.acquire_lock("sync", "alpha", 60)
    assert store.acquire_lock("export", "beta", 60)
    assert not store.acquire_lock("export", "alpha", 60)


def race(stores: list[SqlStateStore], name: str, now: datetime | None = None) -> list[bool]:
    """Every store tries to take ``name`` at the same moment, each from its own thread."""
    start = threading.Barrier(len(stores))
    wins = [False] * len(stores)
    errors: list[BaseException] = []

    def contend(index: int) -> None:
        try:
            start.wait()
            wins[index] = stores[index].acquire_lock(name, f"owner-{index}", 60, now=now)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return wins


def test_racing_processes_exactly_one_wins(backend: Backend) -> None:
    stores = [backend.new_store() for _ in range(6)]
    for round_ in range(5):
        wins = race(stores, f"sync-{round_}")
        assert sum(wins) == 1
        holder = stores[0].lock_holder(f"sync-{round_}")
        assert holder is not None and holder[0] == f"owner-{wins.index(True)}"


def test_racing_for_an_expired_lock_exactly_one_wins(backend: Backend) -> None:
    stores = [backend.new_store() for _ in range(6)]
    for round_ in range(5):
        name = f"sync-{round_}"
        assert stores[0].acquire_lock(name, "crashed", 1, now=T0)
        wins = race(stores, name, now=T0 + timedelta(seconds=5))
        assert sum(wins) == 1
        holder = stores[0].lock_holder(name, now=T0 + timedelta(seconds=5))
        assert holder is not None and holder[0] == f"owner-{wins.index(True)}"


# --- heartbeats and key-value -------------------------------------------------------------


def test_heartbeat(store: SqlStateStore) -> None:
    assert store.last_heartbeat("scheduler") is None
    store.heartbeat("scheduler", T0, {"pid": 12, "next_run": "2024-05-01T13:00:00+00:00"})
    store.heartbeat("scheduler", T0 + timedelta(minutes=1), {"pid": 13})
    store.heartbeat("other", T0)
    assert store.last_heartbeat("scheduler") == (T0 + timedelta(minutes=1), {"pid": 13})
    assert store.last_heartbeat("other") == (T0, {})


def test_key_values(store: SqlStateStore) -> None:
    assert store.get_value("crm_snapshot") is None
    assert store.get_value("crm_snapshot", default={}) == {}
    value = {"salesforce": {"records": 1200, "read_at": "2024-05-01T12:00:00+00:00"}, "ok": True}
    store.set_value("crm_snapshot", value, at=T0)
    store.set_value("last_full_refresh", "2024-05-01", at=T0)
    assert store.get_value("crm_snapshot") == value
    store.set_value("crm_snapshot", [1, 2, 3], at=T0 + timedelta(hours=1))
    assert store.get_value("crm_snapshot") == [1, 2, 3]
    assert store.value_updated_at("crm_snapshot") == T0 + timedelta(hours=1)
    assert store.get_value("last_full_refresh") == "2024-05-01"
    assert store.value_updated_at("missing") is None


class _SnapshotOnly:
    """A destination the snapshot never reads or writes through: its store on its own."""

    name = "salesforce"


def test_crm_snapshot_replaces_upserts_and_loads_on_each_backend(store: SqlStateStore) -> None:
    snap = SnapshottingDestination(_SnapshotOnly(), store.engine, store)  # type: ignore[arg-type]
    records = [
        CrmRecord(f"001{i:04d}", (f"a{i}.com",), {"PQA_Score__c": float(i)}, f"A{i}", T0)
        for i in range(30)
    ]
    snap._replace(records)
    changed = [
        CrmRecord(r.id, r.domain_values, {"PQA_Score__c": 99.0}, r.name, T0 + timedelta(hours=1))
        for r in records[:10]
    ]
    added = CrmRecord("001NEW", ("new.com",), {"PQA_Score__c": None}, "New", None)
    snap._upsert([*changed, added])  # ON CONFLICT on SQLite and PostgreSQL
    loaded = {r.id: r for r in snap._load()}
    assert len(loaded) == 31
    assert [loaded[r.id] for r in changed] == changed
    assert loaded[records[10].id] == records[10]
    assert loaded["001NEW"] == added


# --- the last run's lists -----------------------------------------------------------------


def abm_row(domain: str, score: int) -> dict[str, object]:
    """An ``abm`` list row as the service saves it."""
    return {
        "domain": domain,
        "account": domain,
        "score": score,
        "tier": "sales",
        "active_users": 9,
        "users": 12,
        "motion": "abm",
        "signals": '9 active users; =HYPERLINK("x")',
    }


def test_lists_round_trip_and_a_later_save_replaces_them(store: SqlStateStore) -> None:
    assert store.load_lists() is None
    stale = {"destination": "salesforce", "domain": "a.com", "qualified_since": T0}
    store.save_lists("r1", T0, {"abm": [abm_row("a.com", 90)], "stale": [stale]})

    loaded = store.load_lists()

    assert loaded is not None
    run_id, at, lists = loaded
    assert (run_id, at) == ("r1", T0)
    assert lists["abm"] == [abm_row("a.com", 90)]
    assert lists["stale"] == [{**stale, "qualified_since": T0.isoformat()}]  # JSON text
    later = T0 + timedelta(hours=4)
    store.save_lists("r2", later.astimezone(IST), {"abm": [abm_row("b.com", 85)]})
    reread = backend_store_again(store)
    assert reread == ("r2", later, {"abm": [abm_row("b.com", 85)]})  # stale went with r1


def backend_store_again(store: SqlStateStore) -> object:
    """What another process opening the same database reads."""
    other = SqlStateStore(str(store.engine.url), engine=store.engine)
    return other.load_lists()


def test_empty_lists_are_kept_as_empty(store: SqlStateStore) -> None:
    store.save_lists("r1", T0, {"abm": [], "unmatched": []})
    assert store.load_lists() == ("r1", T0, {"abm": [], "unmatched": []})


def test_an_older_store_without_the_lists_table_reads_as_no_lists(backend: Backend) -> None:
    store = backend.new_store()
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE run_lists"))
    assert SqlStateStore(backend.url, engine=store.engine).load_lists() is None
    reopened = backend.new_store()  # opening it for writing creates the table
    reopened.save_lists("r1", T0, {"abm": [abm_row("a.com", 90)]})
    assert reopened.load_lists() == ("r1", T0, {"abm": [abm_row("a.com", 90)]})


def test_fifty_thousand_rows_save_in_well_under_a_few_seconds(tmp_path: Path) -> None:
    store = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    rows = [abm_row(f"company{i}.com", i % 101) for i in range(50_000)]
    started = time.perf_counter()
    store.save_lists("r1", T0, {"abm": rows, "unmatched": rows})
    took = time.perf_counter() - started
    loaded = store.load_lists()
    assert loaded is not None and len(loaded[2]["abm"]) == len(loaded[2]["unmatched"]) == 50_000
    assert took < 5, took  # about 0.3 s for two 50k-row lists on a shared 2-core machine


# --- errors -------------------------------------------------------------------------------


def test_unreachable_postgres_is_fatal_and_redacted() -> None:
    url = "postgresql+psycopg://pls:Sup3rSecretPw@127.0.0.1:1/state"
    with pytest.raises(FatalError) as caught:
        SqlStateStore.open(url)
    message = str(caught.value)
    assert "Sup3rSecretPw" not in message
    assert "127.0.0.1:1" in message and "create tables failed" in message
    assert caught.value.code == "state_unreachable"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_unusable_sqlite_path_is_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(FatalError, match="cannot create its folder"):
        SqlStateStore.open(f"sqlite:///{blocker / 'sub' / 'state.sqlite'}")


def test_an_invalid_url_is_fatal() -> None:
    with pytest.raises(FatalError, match="not a valid SQLAlchemy URL"):
        SqlStateStore("not a url")


def test_a_missing_driver_is_fatal_and_redacted() -> None:
    with pytest.raises(FatalError) as caught:
        SqlStateStore("nosuchdialect://u:TopSecret99@host/db")
    assert "TopSecret99" not in str(caught.value)


# --- the ownership ledger -----------------------------------------------------------------


def test_the_ownership_ledger_round_trips_per_crm_and_forgets(store: SqlStateStore) -> None:
    written = T0 + timedelta(minutes=5)
    rows = [
        OwnedRecord("001A", "acme.com", {"PQA_Score__c": 90, "PQA_Tier__c": "sales"}),
        OwnedRecord(
            "001B",
            "mql:beta.io",
            {"PQA_Lead_Channel__c": "mql_only"},
            pending={"PQA_Lead_Channel__c": None},
            modified=T0.astimezone(IST),
            written_at=written,
        ),
        OwnedRecord("001C", "", {}, modified=T0, in_flight=True),
    ]
    store.save_owned("salesforce:00D000000000001AAA", rows)
    store.save_owned("salesforce:00D000000000002AAA", [rows[0]])  # another org: its own ledger
    assert store.load_owned("salesforce:00D000000000001AAA") == {r.record_id: r for r in rows}

    replaced = OwnedRecord("001A", "acme.com", {"PQA_Score__c": 40})
    many = [f"001X{i:05d}" for i in range(1_200)]  # past one IN list's worth
    store.save_owned("salesforce:00D000000000001AAA", [OwnedRecord(r, "x", {}) for r in many])
    store.save_owned("salesforce:00D000000000001AAA", [replaced], forget=["001B", *many])
    other = SqlStateStore(str(store.engine.url), engine=store.engine)
    assert other.load_owned("salesforce:00D000000000001AAA") == {
        "001A": replaced,
        "001C": rows[2],
    }
    assert other.load_owned("salesforce:00D000000000002AAA") == {"001A": rows[0]}
    assert other.load_owned("hubspot:1") == {}
