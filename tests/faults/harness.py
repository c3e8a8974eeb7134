"""What the fault and crash tests share: demo data, sandbox rigs, CRM snapshots, write and
request hooks, and the tally the terminal summary reports.

The tests drive the product the way ``pls-sync demo`` does (settings from ``config/`` with the
demo's environment variables, adapters from ``pls_sync.bootstrap``), against a sandbox seeded
with the same demo companies as the warehouse. Faults come from the sandbox's own
``FaultInjector``; what it cannot express (a validation rule, a hidden picklist option, a kill
at the Nth request) is done here by wrapping the sandbox's API modules on the instance.

A rig has one clock for the whole world it runs: the sandbox's record stamps and search index,
and the rep alerts' ledger and settling time (``RigClock``: this machine's time moved forward by
an offset). A rerun after a crash or a fault is "a later run": ``converge`` moves the clock past
the time a created task takes to become visible to its lookup, instead of sleeping.
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.server import Sandbox
from pls_sync.service import Adapters, RunOptions, RunResult, run_sync

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "config" / "pls_sync.yaml"
DEMO_SEED = 7
DESTINATIONS = ("salesforce", "hubspot")
SF_WRITE = "sf.composite.sobjects.patch"
HS_WRITE = "hs.companies.batch_update"
# Task creates: only rep alerts write through Salesforce's single-record endpoints (create or
# upsert by the key field); "get", "delete" and "deleted" are left out.
SF_TASK_WRITE = "sf.sobject.[!gd]*"
HS_TASK_WRITE = "hs.tasks.create"
SF_TASK_KEY = "PQA_Alert_Key__c"
HS_TASK_KEY = "pqa_alert_key"
# Short enough that a test of a timeout takes a fraction of a second.
TEST_TIMEOUT = 0.4


# --------------------------------------------------------------------------- the tally


@dataclass
class Tally:
    """Counts over the whole test session, printed by ``tests/faults/conftest.py``."""

    faults_injected: int = 0
    runs: int = 0
    runs_killed: int = 0
    fields_compared: int = 0
    differences: int = 0
    tasks_compared: int = 0
    duplicate_tasks: int = 0
    faults_by_kind: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        """The summary lines."""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults_by_kind.items()))
        return [
            f"faults injected: {self.faults_injected}",
            f"faults by kind: {kinds or 'none'}",
            f"runs: {self.runs} (killed: {self.runs_killed})",
            f"CRM fields compared with a clean run: {self.fields_compared}",
            f"differences: {self.differences}",
            f"rep alert tasks compared with a clean run: {self.tasks_compared}",
            f"duplicate tasks: {self.duplicate_tasks}",
        ]


TALLY = Tally()


# --------------------------------------------------------------------------- demo data


@dataclass(frozen=True, slots=True)
class DemoData:
    """A generated demo warehouse and the companies the sandbox is seeded with."""

    warehouse: Path
    as_of: datetime
    companies: int
    seed: int = DEMO_SEED

    @property
    def warehouse_url(self) -> str:
        """The warehouse's SQLAlchemy URL."""
        return f"duckdb:///{self.warehouse}"


def make_demo(folder: Path, companies: int, seed: int = DEMO_SEED) -> DemoData:
    """Generate the demo warehouse (``pls-sync demo``'s generator) under ``folder``."""
    from connectors.demo_warehouse import generate_demo_warehouse

    path = folder / "demo.duckdb"
    stats = generate_demo_warehouse(path, seed=seed, companies=companies)
    return DemoData(path, stats.as_of, companies, seed)


def new_sandbox(demo: DemoData) -> Sandbox:
    """A started sandbox seeded with the demo's companies (the demo's CRM picture)."""
    from pls_sync.demo_companies import demo_companies

    return Sandbox(
        port=0, seed=demo.seed, companies=demo_companies(demo.seed, demo.companies)
    ).start()


def sync_env(
    box: Sandbox,
    demo: DemoData,
    state_url: str,
    secrets_dir: Path,
    destinations: Sequence[str] = DESTINATIONS,
    *,
    salesforce_session: bool = True,
) -> dict[str, str]:
    """The environment ``pls-sync demo`` sets, for the destinations wanted.

    Without ``salesforce_session`` Salesforce gets the username/password flow instead.
    """
    env = {
        "PLS_SYNC_WAREHOUSE_URL": demo.warehouse_url,
        "PLS_SYNC_STATE_URL": state_url,
        "PLS_SYNC_SALESFORCE_ENABLED": str("salesforce" in destinations).lower(),
        "PLS_SYNC_HUBSPOT_ENABLED": str("hubspot" in destinations).lower(),
        "PLS_SYNC_SECRETS_DIR": str(secrets_dir),
        "HUBSPOT_BASE_URL": box.url,
        "HUBSPOT_ACCESS_TOKEN": box.hubspot_token,
    }
    if salesforce_session:
        env["SALESFORCE_INSTANCE_URL"] = box.url
        env["SALESFORCE_SESSION_ID"] = box.session_id
    else:
        env["SALESFORCE_USERNAME"] = box.salesforce.username
        env["SALESFORCE_PASSWORD"] = box.salesforce.password
        env["SALESFORCE_SECURITY_TOKEN"] = box.salesforce.security_token
    return env


def small_batch_config(
    folder: Path,
    salesforce: int = 25,
    hubspot: int = 20,
    *,
    backfill: bool = False,
    bulk_threshold: int | None = None,
) -> Path:
    """A copy of ``config/`` and ``mappings/`` with small write batches, so that 60-80 demo
    companies still take several write requests per CRM; returns the main config file.

    ``backfill`` sets ``alerts.backfill: true`` (the first run with alerts on gives every
    account in the tier its task); ``bulk_threshold`` lowers Salesforce's switch to Bulk API 2.0.
    """
    shutil.copytree(REPO_ROOT / "config", folder / "config")
    shutil.copytree(REPO_ROOT / "mappings", folder / "mappings")
    main = folder / "config" / "pls_sync.yaml"
    edits = [
        ("batch_size: 200 ", f"batch_size: {salesforce} "),
        ("batch_size: 100 ", f"batch_size: {hubspot} "),
    ]
    if bulk_threshold is not None:
        edits.append(("bulk_threshold: 2000 ", f"bulk_threshold: {bulk_threshold} "))
    _edit(main, edits)
    if backfill:
        _edit(folder / "config" / "channels.yaml", [("  backfill: false", "  backfill: true")])
    return main


def _edit(path: Path, edits: Sequence[tuple[str, str]]) -> None:
    """Replace each ``old`` (which must be there) with ``new`` once in ``path``."""
    text = path.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, f"{old!r} not in {path}"
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- CRM snapshots


@functools.cache
def mapped_fields(destination: str) -> tuple[str, ...]:
    """The CRM fields the shipped mapping of ``destination`` writes."""
    from pls_sync.config import load_settings

    settings = load_settings(CONFIG, env={"PLS_SYNC_HUBSPOT_ENABLED": "true"})
    return tuple(settings.destinations[destination].mapping.targets)


def crm_snapshot(
    sandbox: Sandbox, destinations: Sequence[str] = DESTINATIONS
) -> dict[str, dict[str, Any]]:
    """``{"<destination>:<record id>": {mapped field: stored value}}`` over every live
    Salesforce Account and HubSpot company, read straight from the sandbox's store."""
    out: dict[str, dict[str, Any]] = {}
    if "salesforce" in destinations:
        fields = mapped_fields("salesforce")
        for record_id, record in sandbox.salesforce.records["Account"].items():
            if not record.get("IsDeleted"):
                out[f"salesforce:{record_id}"] = {name: record.get(name) for name in fields}
    if "hubspot" in destinations:
        assert sandbox.hubspot is not None
        fields = mapped_fields("hubspot")
        for record_id in sandbox.hubspot.ids("companies"):
            props = sandbox.hubspot.company(record_id)
            out[f"hubspot:{record_id}"] = {name: props.get(name) for name in fields}
    return out


def snapshot_differences(
    expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]]
) -> tuple[int, list[str]]:
    """(fields compared, one line per differing record field or missing record)."""
    compared = 0
    differences: list[str] = []
    for record_id in sorted(set(expected) | set(actual)):
        want, got = expected.get(record_id), actual.get(record_id)
        if want is None or got is None:
            differences.append(f"{record_id}: only in {'actual' if want is None else 'expected'}")
            continue
        for name in sorted(set(want) | set(got)):
            compared += 1
            if want.get(name) != got.get(name):
                differences.append(f"{record_id}.{name}: {want.get(name)!r} != {got.get(name)!r}")
    return compared, differences


def assert_same_crm(expected: Mapping[str, Mapping[str, Any]], box: Sandbox, **kw: Any) -> None:
    """Compare the sandbox's mapped fields with a clean run's, field by field; tally it."""
    destinations = kw.get("destinations", DESTINATIONS)
    compared, differences = snapshot_differences(expected, crm_snapshot(box, destinations))
    TALLY.fields_compared += compared
    TALLY.differences += len(differences)
    assert compared > 0
    assert not differences, f"{len(differences)} differences, e.g. {differences[:10]}"


def alert_tasks(box: Sandbox, destinations: Sequence[str] = DESTINATIONS) -> Counter[str]:
    """``{"<destination>:<alert key>": live tasks carrying it}``: the Salesforce Tasks with a
    ``PQA_Alert_Key__c`` and the HubSpot tasks with a ``pqa_alert_key``, from the stores."""
    tasks: Counter[str] = Counter()
    if "salesforce" in destinations:
        for record in list(box.salesforce.records["Task"].values()):
            key = record.get(SF_TASK_KEY)
            if key and not record.get("IsDeleted"):
                tasks[f"salesforce:{key}"] += 1
    if "hubspot" in destinations:
        assert box.hubspot is not None
        store = box.hubspot.objects["tasks"]
        for task_id in box.hubspot.ids("tasks"):
            key = store[task_id]["properties"].get(HS_TASK_KEY)
            if key:
                tasks[f"hubspot:{key}"] += 1
    return tasks


def assert_tasks_once(expected: Counter[str], box: Sandbox, **kw: Any) -> None:
    """Exactly one task per alert key, and the keys of a clean run; tallied."""
    destinations = kw.get("destinations", DESTINATIONS)
    actual = alert_tasks(box, destinations)
    duplicates = {key: n for key, n in actual.items() if n > 1}
    TALLY.tasks_compared += actual.total()
    TALLY.duplicate_tasks += sum(n - 1 for n in duplicates.values())
    assert not duplicates, f"{len(duplicates)} alert keys with several tasks: {duplicates}"
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    assert not missing and not extra, f"tasks missing: {missing}; unexpected: {extra}"


# --------------------------------------------------------------------------- write log


@dataclass
class WriteLog:
    """Every write the sandbox applied, per record: all of them, and those that changed a
    mapped field (a resend of the same values changes nothing)."""

    applied: Counter[str] = field(default_factory=Counter)
    effective: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, box: Sandbox) -> WriteLog:
        """Wrap the sandbox's commit functions (Salesforce ``_commit``, HubSpot ``_apply``)."""
        sf, hs = box.salesforce, box.hubspot
        sf_fields, hs_fields = mapped_fields("salesforce"), mapped_fields("hubspot")
        sf_commit = sf._commit

        def commit(spec: Any, record: dict[str, Any], changes: Mapping[str, Any]) -> None:
            before = {name: record.get(name) for name in sf_fields}
            sf_commit(spec, record, changes)
            after = {name: record.get(name) for name in sf_fields}
            if spec.name == "Account":
                self._count(f"salesforce:{record['Id']}", before != after)

        sf._commit = commit  # type: ignore[method-assign]
        if hs is not None:
            hs_apply = hs._apply

            def apply(object_type: str, record: dict[str, Any], values: dict[str, str]) -> None:
                props = record["properties"]
                before = {name: props.get(name) for name in hs_fields}
                hs_apply(object_type, record, values)
                after = {name: props.get(name) for name in hs_fields}
                if object_type == "companies":
                    self._count(f"hubspot:{record['id']}", before != after)

            hs._apply = apply
        return self

    def _count(self, key: str, changed: bool) -> None:
        with self._lock:
            self.applied[key] += 1
            if changed:
                self.effective[key] += 1

    def of(self, destination: str) -> tuple[Counter[str], Counter[str]]:
        """(applied, effective) for one destination's records."""
        prefix = destination + ":"
        return (
            Counter({k: v for k, v in self.applied.items() if k.startswith(prefix)}),
            Counter({k: v for k, v in self.effective.items() if k.startswith(prefix)}),
        )


# --------------------------------------------------------------------------- request hooks

Handler = Callable[[Request], Response]
Hook = Callable[[str, Request, Handler], Response]


class RequestHooks:
    """Hooks around the sandbox's API modules' ``handle``: each gets the counted endpoint, the
    request and the next handler, and returns the response. Faults the ``FaultInjector``
    picked are answered before the hooks run."""

    def __init__(self, box: Sandbox):
        self._hooks: list[Hook] = []
        self._lock = threading.Lock()
        for api in box.apis:
            self._wrap(api)

    def _wrap(self, api: Any) -> None:
        original: Handler = api.handle

        def handle(request: Request) -> Response:
            endpoint = api.endpoint(request)
            with self._lock:
                hooks = list(self._hooks)

            def call(index: int, req: Request) -> Response:
                if index == len(hooks):
                    return original(req)
                return hooks[index](endpoint, req, lambda r: call(index + 1, r))

            return call(0, request)

        api.handle = handle

    def add(self, hook: Hook) -> None:
        """Install ``hook(endpoint, request, next_handler) -> Response``."""
        with self._lock:
            self._hooks.append(hook)

    def clear(self) -> None:
        """Remove every hook."""
        with self._lock:
            self._hooks.clear()


# --------------------------------------------------------------------------- running


class SleepRecorder:
    """A ``sleep`` that takes no time and remembers what it was asked to wait; it moves the
    rig's monotonic clock (``monotonic``) forward instead, so the client's pacers and the
    sandbox's rate limits see the wait as done."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._slept = 0.0

    def __call__(self, seconds: float) -> None:
        self.waits.append(float(seconds))
        self._slept += max(0.0, float(seconds))

    def monotonic(self) -> float:
        """This machine's monotonic time plus every wait asked for."""
        return time.monotonic() + self._slept


class RigClock:
    """The rig's world clock: this machine's time moved forward by ``offset``.

    Tests only ever move it (``advance``); nothing depends on the date. The sandbox stamps
    records and lags its search on it, and runs read the alert ledger's times from it.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        """The rig's current time (aware UTC)."""
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.offset += timedelta(seconds=seconds)


def settle_seconds() -> float:
    """How far a rerun moves the clock: past the longest time a created task can stay
    invisible to its lookup (HubSpot's search lag as the product allows for it)."""
    from connectors.leads import HubSpotAlerts, SalesforceAlerts

    return max(HubSpotAlerts.lookup_lag_seconds, SalesforceAlerts.lookup_lag_seconds) + 1.0


@contextmanager
def alerts_on_clock(now: Callable[[], datetime]) -> Iterator[None]:
    """Run the rep alerts' ledger stamps and settling decisions on ``now``.

    ``RunOptions`` has no clock for alerts (``send_alerts`` and the ledger read this machine's
    time; see the report), so the test sets both where they are looked up.
    """
    import connectors.alerts_state as alerts_state
    import pls_sync.service as service
    from pls_sync.alerts import send_alerts

    with (
        mock.patch.object(alerts_state, "_now", now),
        mock.patch.object(service, "send_alerts", functools.partial(send_alerts, clock=now)),
    ):
        yield


class FaultKinds:
    """Remembers every rule added to a sandbox's ``FaultInjector`` (an exhausted rule leaves
    its list) so the faults each injected can be tallied by kind."""

    def __init__(self, box: Sandbox):
        self._rules: list[Any] = []
        self._counted: dict[int, int] = {}
        self._injected = box.faults.injected
        self._box = box
        add = box.faults.add

        def remembering_add(kind: str, **kwargs: Any) -> Any:
            rule = add(kind, **kwargs)
            self._rules.append(rule)
            return rule

        box.faults.add = remembering_add  # type: ignore[method-assign]

    @property
    def rules(self) -> list[Any]:
        """Every rule added, in order (exhausted ones too)."""
        return list(self._rules)

    def tally(self) -> None:
        """Add the faults injected since the last tally to ``TALLY``."""
        for rule in self._rules:
            fired = rule.fired - self._counted.get(id(rule), 0)
            self._counted[id(rule)] = rule.fired
            TALLY.faults_by_kind[rule.kind] += fired
        injected = self._box.faults.injected
        TALLY.faults_injected += injected - self._injected
        self._injected = injected


def inner_destination(destination: Any) -> Any:
    """The connector under a ``SnapshottingDestination`` (or the destination itself)."""
    return getattr(destination, "inner", destination)


def tune_connectors(adapters: Adapters, sleep: SleepRecorder, timeout: float) -> None:
    """Give the built connectors a fake sleep (and HubSpot's pacers its clock) and a short
    timeout.

    Neither ``build_adapters`` nor the connectors' ``from_env`` take a timeout, and bootstrap
    passes no ``sleep``: the tests set the connectors' own attributes (see the report).
    """
    for destination in adapters.destinations.values():
        inner = inner_destination(destination)
        inner.sleep = sleep
        if inner.name == "salesforce":
            inner.timeout = timeout
        else:
            inner.timeout = (timeout, timeout)
            for pacer in (inner.pacer, getattr(inner, "search_pacer", None)):
                if pacer is not None:
                    pacer._sleep = sleep
                    pacer._clock = sleep.monotonic


@dataclass
class Rig:
    """One sandbox, one state store and the demo data: runs ``run_sync`` as the demo does.

    ``alerts`` switches rep alerts on (``PLS_SYNC_ALERTS_ENABLED``); the sandbox and the alerts
    run on the rig's ``clock``."""

    box: Sandbox
    demo: DemoData
    folder: Path
    destinations: tuple[str, ...] = DESTINATIONS
    salesforce_session: bool = True
    sleep: SleepRecorder = field(default_factory=SleepRecorder)
    timeout: float = TEST_TIMEOUT
    writes: WriteLog = field(default_factory=WriteLog)
    hooks: RequestHooks | None = None
    customize: Callable[[Adapters], None] | None = None
    config: Path = CONFIG
    runs: list[RunResult] = field(default_factory=list)
    alerts: bool = False
    clock: RigClock = field(default_factory=RigClock)

    def __post_init__(self) -> None:
        self.writes.install(self.box)
        self.hooks = RequestHooks(self.box)
        self.fault_kinds = FaultKinds(self.box)
        self.box.set_clock(self.clock.now)
        if self.box.hubspot is not None:
            # The rate limits count time as the run's pacers do (fake sleeps included).
            self.box.hubspot.limiter.monotonic = self.sleep.monotonic
        (self.folder / "secrets").mkdir(parents=True, exist_ok=True)

    @property
    def state_url(self) -> str:
        """The rig's SQLite state store."""
        return f"sqlite:///{self.folder / 'state.sqlite'}"

    def env(self) -> dict[str, str]:
        """The run's environment."""
        env = sync_env(
            self.box,
            self.demo,
            self.state_url,
            self.folder / "secrets",
            self.destinations,
            salesforce_session=self.salesforce_session,
        )
        env["PLS_SYNC_ALERTS_ENABLED"] = str(self.alerts).lower()
        return env

    def adapters(self) -> tuple[Any, Adapters]:
        """Settings and adapters built by ``pls_sync.bootstrap``, tuned for tests."""
        from pls_sync.bootstrap import build_adapters
        from pls_sync.config import load_settings

        env = self.env()
        settings = load_settings(self.config, env=env)
        adapters = build_adapters(settings, env=env)
        assert not adapters.destination_errors, adapters.destination_errors
        if self.customize is not None:
            self.customize(adapters)
        tune_connectors(adapters, self.sleep, self.timeout)
        return settings, adapters

    def run(self, as_of: datetime | None = None) -> RunResult:
        """One ``run_sync`` at ``as_of`` (default: the demo's as-of time) on the rig's clock;
        the faults injected so far are tallied."""
        settings, adapters = self.adapters()
        options = RunOptions(
            as_of=as_of or self.demo.as_of, api_budget_share=settings.api_budget_share
        )
        try:
            with alerts_on_clock(self.clock.now):
                result = run_sync(
                    adapters,
                    settings.scoring,
                    options,
                    batch_sizes={n: d.batch_size for n, d in settings.destinations.items()},
                    channels=settings.channels,
                )
        finally:
            TALLY.runs += 1
            self.fault_kinds.tally()
        self.runs.append(result)
        return result

    def clear_faults(self) -> None:
        """Switch every injected fault and hook off (the infrastructure recovered)."""
        self.box.faults.clear()
        assert self.hooks is not None
        self.hooks.clear()

    def destination(self, result: RunResult, name: str) -> dict[str, Any]:
        """The summary entry of one destination."""
        entry: dict[str, Any] = result.summary["destinations"][name]
        return entry


@contextmanager
def started(demo: DemoData) -> Iterator[Sandbox]:
    """A fresh seeded sandbox for the block."""
    box = new_sandbox(demo)
    try:
        yield box
    finally:
        box.stop()


# --------------------------------------------------------------------------- clean reference


@dataclass(frozen=True)
class CleanRun:
    """What an uninterrupted run on a fresh sandbox leaves: the CRM's mapped fields, the writes
    applied per record and the run summary."""

    snapshot: dict[str, dict[str, Any]]
    applied: Counter[str]
    effective: Counter[str]
    summary: dict[str, Any]
    tasks: Counter[str] = field(default_factory=Counter)

    def written_ids(self, destination: str, count: int | None = None) -> list[str]:
        """Ids of records the clean run wrote in ``destination`` (the first ``count``)."""
        prefix = destination + ":"
        ids = sorted(k[len(prefix) :] for k in self.effective if k.startswith(prefix))
        return ids if count is None else ids[:count]


def clean_reference(
    demo: DemoData,
    folder: Path,
    destinations: tuple[str, ...],
    config: Path,
    *,
    alerts: bool = False,
    as_ofs: Sequence[datetime] = (),
) -> CleanRun:
    """Run once (or once at each of ``as_ofs``, in order), without faults, on a fresh sandbox
    and state store. With alerts on, each alert key must have exactly one task."""
    with started(demo) as box:
        rig = Rig(box, demo, folder, destinations=destinations, config=config, alerts=alerts)
        for as_of in as_ofs or (demo.as_of,):
            result = rig.run(as_of)
            assert result.status == "succeeded", result.summary
            rig.clock.advance(settle_seconds())
        applied = Counter(rig.writes.applied)
        if len(as_ofs) < 2:
            assert applied and all(n == 1 for n in applied.values()), applied
        tasks = alert_tasks(box, destinations)
        assert bool(tasks) == alerts and all(n == 1 for n in tasks.values()), tasks
        return CleanRun(
            crm_snapshot(box, destinations),
            applied,
            Counter(rig.writes.effective),
            result.summary,
            tasks,
        )


def assert_accounted(entry: Mapping[str, Any]) -> None:
    """Every changed record was written, rejected or left for the next run: none vanished."""
    settled = entry["records_written"] + entry["rejected"] + entry["not_attempted"]
    assert settled == entry["records_changed"], entry


def converge(
    rig: Rig,
    clean: CleanRun,
    *,
    max_applied: int = 1,
    as_of: datetime | None = None,
    same_writes: bool = True,
) -> RunResult:
    """Clear the faults and rerun later (the rig's clock moved past the alerts' settling time),
    at ``as_of`` (default: the demo's). Check the CRM equals the clean run's, field by field,
    with one task per alert key and the clean run's keys, and no record written more than
    ``max_applied`` times in all; with ``same_writes``, each record's value changed exactly as
    often as in the clean run (once)."""
    rig.clear_faults()
    rig.clock.advance(settle_seconds())
    rerun = rig.run(as_of)
    assert rerun.status == "succeeded", rerun.summary
    for name in rig.destinations:
        entry = rig.destination(rerun, name)
        assert entry["rejected"] == 0 and entry["not_attempted"] == 0, entry
        alerts = entry.get("alerts")
        if rig.alerts:
            assert alerts is not None and alerts["settling"] == alerts["rejected"] == 0, alerts
    assert_same_crm(clean.snapshot, rig.box, destinations=rig.destinations)
    if rig.alerts:
        assert_tasks_once(clean.tasks, rig.box, destinations=rig.destinations)
    for name in rig.destinations:
        applied, _ = rig.writes.of(name)
        assert max(applied.values()) <= max_applied, applied.most_common(3)
    if same_writes:
        assert_same_writes(rig, clean)
    return rerun


def assert_same_writes(rig: Rig, clean: CleanRun) -> None:
    """Each record's mapped values changed as often as in the clean run, the same records
    written."""
    for name in rig.destinations:
        applied, effective = rig.writes.of(name)
        clean_applied, clean_effective = (
            Counter({k: v for k, v in c.items() if k.startswith(name + ":")})
            for c in (clean.applied, clean.effective)
        )
        assert effective == clean_effective
        assert set(applied) == set(clean_applied)


# --------------------------------------------------------------------------- hook factories


def after_nth(endpoint: str, n: int, action: Callable[[], object]) -> Hook:
    """A hook that runs ``action`` once the ``n``-th request to ``endpoint`` was answered."""
    seen = 0
    lock = threading.Lock()

    def hook(name: str, request: Request, next_handler: Handler) -> Response:
        nonlocal seen
        response = next_handler(request)
        if name == endpoint:
            with lock:
                seen += 1
                fire = seen == n
            if fire:
                action()
        return response

    return hook


def before_nth(endpoint: str, n: int, action: Callable[[], object]) -> Hook:
    """A hook that runs ``action`` when the ``n``-th request to ``endpoint`` arrives."""
    seen = 0
    lock = threading.Lock()

    def hook(name: str, request: Request, next_handler: Handler) -> Response:
        nonlocal seen
        if name == endpoint:
            with lock:
                seen += 1
                fire = seen == n
            if fire:
                action()
        return next_handler(request)

    return hook


def soql_from(sobject: str) -> Callable[[str, Request], bool]:
    """A request predicate: a SOQL query (first page) reading ``sobject``."""
    needle = f" FROM {sobject} ".lower()

    def matches(endpoint: str, request: Request) -> bool:
        text = (request.param("q") or "").lower() + " "
        return endpoint == "sf.query" and needle in text

    return matches


def inject_when(
    box: Sandbox, matches: Callable[[str, Request], bool], kind: str, times: int | None = None
) -> Hook:
    """A hook answering requests that ``matches`` with the vendor's response for the fault
    ``kind`` (as the ``FaultInjector`` renders it), ``times`` times or forever; counted with
    the sandbox's injected faults. For faults the injector cannot aim (one SOQL query among
    several on ``sf.query``)."""
    remaining = times
    lock = threading.Lock()

    def hook(endpoint: str, request: Request, next_handler: Handler) -> Response:
        nonlocal remaining
        if not matches(endpoint, request):
            return next_handler(request)
        with lock:
            fire = remaining is None or remaining > 0
            if fire and remaining is not None:
                remaining -= 1
            if fire:
                box.faults.injected += 1
                TALLY.faults_by_kind[kind] += 1
        if not fire:
            return next_handler(request)
        api = box.salesforce if endpoint.startswith("sf.") else box.hubspot
        return api.render_fault(kind, request)

    return hook
