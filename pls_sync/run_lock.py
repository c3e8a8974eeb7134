"""The run lock: never two runs at once against the same destinations, here or in another
container. A short lease in the state store, renewed in the background while the run lives."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

import structlog

from pls_sync.errors import RunLockedError
from pls_sync.ports import StateStore

log = structlog.get_logger("pls_sync")


class RunLock:
    """The state-store lock that keeps two runs from writing at once, here or in another container.

    The lease is short and a background thread renews it while the run is alive, so a
    container that dies holding the lock frees it within one lease. A holder on this same
    host whose process is gone (killed with SIGKILL) is taken over at once.
    """

    def __init__(
        self,
        state: StateStore,
        name: str,
        lease_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.state = state
        self.name = name
        self.lease = lease_seconds
        self.owner = lock_owner()
        self.lost = threading.Event()
        self.clock = clock
        self._renewed_at = clock()
        self._renewing = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``RunLockedError`` naming the holder."""
        if not self.state.acquire_lock(self.name, self.owner, self.lease):
            holder = self.state.lock_holder(self.name)
            if holder is not None and _owner_is_dead(holder[0]):
                log.warning("lock_taken_over", lock=self.name, dead_owner=holder[0])
                self.state.release_lock(self.name, holder[0])
                if self.state.acquire_lock(self.name, self.owner, self.lease):
                    self._renewed_at = self.clock()
                    self._start_renewing()
                    return
                holder = self.state.lock_holder(self.name)
            who = f"{holder[0]} until {holder[1].isoformat()}" if holder else "another run"
            raise RunLockedError(f"another run holds the lock {self.name!r} ({who})", code="locked")
        self._renewed_at = self.clock()
        self._start_renewing()

    def _start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name="run-lock", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            if not self._renew():
                return

    def _renew(self) -> bool:
        """Extend the lease; False once it is lost (another run holds the lock)."""
        with self._renewing:
            if self.lost.is_set():
                return False
            try:
                renewed = self.state.renew_lock(self.name, self.owner, self.lease)
            except Exception as exc:  # a store hiccup: try again next tick, the lease has slack
                log.warning("lock_renew_failed", lock=self.name, error=str(exc))
                return True
            if not renewed:
                self.lost.set()
                log.error("lock_lost", lock=self.name)
                return False
            self._renewed_at = self.clock()
            return True

    def holds(self) -> bool:
        """Whether this run still holds the lock, checked before every write request.

        A process paused past its lease (SIGSTOP, a long GC, a frozen VM) wakes with its
        renewing thread asleep too: when the last renewal is older than half the lease, the
        lease is renewed here and now, and a lease another run took is lost for good. A renewal
        the store cannot answer counts as held while the lease can still be running.
        """
        if self.lost.is_set():
            return False
        if self.clock() - self._renewed_at <= self.lease / 2:
            return True
        if not self._renew():
            return False
        return self.clock() - self._renewed_at <= self.lease

    def check(self) -> None:
        """Raise when the lease was lost (another run may have taken over)."""
        if not self.holds():
            raise RunLockedError(
                f"lost the lock {self.name!r}: the lease ran out", code="lock_lost"
            )

    def release(self) -> None:
        """Stop renewing and give the lock back."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        self.state.release_lock(self.name, self.owner)


class WriteGate(threading.Event):
    """The ``stop`` a destination's write checks before every request (each Collections call,
    HubSpot batch and Bulk job): set on SIGTERM, and whenever the run no longer holds its lock.

    A subclass of ``threading.Event`` because the connectors take one; ``lock_lost`` tells
    which of the two stopped the write.
    """

    def __init__(self, stop: threading.Event, lock: RunLock | None):
        super().__init__()
        self.stop = stop
        self.lock = lock
        self.lock_lost = False

    def is_set(self) -> bool:
        """True once SIGTERM came or the lock is lost: no further write request goes out."""
        if self.stop.is_set() or super().is_set():
            return True
        if self.lock is not None and not self.lock.holds():
            self.lock_lost = True
            return True
        return False


def this_host() -> str:
    """This process's host as lock owners name it: the hostname and, on Linux, the pid namespace.

    Containers sharing a hostname (host networking) have their own pid namespaces: a pid in
    another one says nothing about processes here, so its owner is never judged dead from here.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}@{namespace}" if namespace else socket.gethostname()


def lock_owner() -> str:
    """A unique lock owner for this process: host (see ``this_host``), pid and a random suffix."""
    return f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _owner_is_dead(owner: str) -> bool:
    """True when ``owner`` (host:pid:nonce) is a process on this host that no longer exists."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != this_host() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
