"""The run lock holds: a run paused past its lease never writes after another run took over.

The lease's clock is a fake one the tests move; the store is the fake state store.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from pls_sync.run_lock import RunLock, WriteGate
from pls_sync.service import LOCK_LOST, Adapters, RunOptions, run_sync
from tests.fakes import FakeState, FakeUsage
from tests.unit.test_service import AS_OF, MAPPING, MODEL, accounts, crm


class Clock:
    """Monotonic seconds a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def another_run_takes_over(state: FakeState, name: str) -> None:
    """What a second run does once the first one's lease ran out."""
    state.locks[name] = ("another-run", datetime.now(UTC) + timedelta(hours=1))


def test_a_lease_is_renewed_when_it_is_checked_after_a_pause() -> None:
    state, clock = FakeState(), Clock()
    lock = RunLock(state, "pls-sync:run", 3_600, clock=clock)  # its renewing thread sleeps
    lock.acquire()
    try:
        before = state.locks["pls-sync:run"][1]
        clock.now += 1_000  # under half the lease: no store call needed
        assert lock.holds() and state.locks["pls-sync:run"][1] == before
        clock.now += 10_000  # paused past the lease, nobody took the lock: renewed now
        assert lock.holds() and state.locks["pls-sync:run"][1] > before
        clock.now += 10_000
        another_run_takes_over(state, "pls-sync:run")
        gate = WriteGate(threading.Event(), lock)
        assert gate.is_set() and gate.lock_lost
        assert not lock.holds()  # lost for good
        assert state.locks["pls-sync:run"][0] == "another-run"
    finally:
        lock.release()
    assert state.locks["pls-sync:run"][0] == "another-run"  # release takes nothing from it


def test_a_run_paused_past_its_lease_writes_nothing_after_another_run_took_over() -> None:
    usage = FakeUsage(accounts({f"co{i}.com": 9 for i in range(5)}))
    state, sf, clock = FakeState(), crm(5, batch_size=2), Clock()
    options = RunOptions(as_of=AS_OF, lock_lease_seconds=60, lock_clock=clock)

    def paused_while_sending_the_second_batch(offset: int) -> None:
        # The second batch passed its lease check and is on its way when the process is
        # stopped for ten minutes; another run takes the lock, runs and finishes meanwhile.
        if offset == 2:
            clock.now += 600
            another_run_takes_over(state, options.lock_name)

    sf.before_batch = paused_while_sending_the_second_batch
    adapters = Adapters(
        usage=usage, state=state, destinations={"salesforce": sf}, mappings={"salesforce": MAPPING}
    )
    result = run_sync(adapters, MODEL, options)

    dest = result.summary["destinations"]["salesforce"]
    assert sf.calls["write"] == 2  # the batch in flight lands; no request after the pause
    assert dest["status"] == "stopped" and dest["error"] == LOCK_LOST
    assert dest["records_written"] == 4 and dest["not_attempted"] == 1
    assert result.status == "stopped"
    written = {rid for rid, r in sf.records.items() if r.fields.get("PQA_Score__c") is not None}
    assert len(written) == 4
