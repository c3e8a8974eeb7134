"""Scale benchmark: a full sync, a 1 % change rerun and an unchanged rerun against the sandbox.

Run on demand, never by pytest (DESIGN.md section 5, issue 6)::

    python benchmarks/scale.py --users 1000000 --events 20000000 --crm-accounts 100000 \
        [--companies N] [--destinations salesforce,hubspot] [--profile [RUN]]

Every heavy part runs in its own process so that the sync's peak RSS is its own: the demo
warehouse is generated in one, the CRM sandbox serves from another, and each of the three
runs is a fresh process (``spawn``) that builds the adapters from ``config/pls_sync.yaml``
through ``pls_sync.bootstrap`` with the environment pointing at the sandbox.

CRM wait is measured in the run process, around every HTTP call: ``requests.Session.send``
(Salesforce, simple-salesforce) and ``urllib3.PoolManager.urlopen`` (HubSpot,
hubspot-api-client), attributed by URL path, plus the time the HubSpot client sleeps in its
request pacers (the 10-second burst limit and the search API's per-second limit), body reads after a call returned, and Bulk API 2.0
job polling and the pauses between HubSpot CRM export polls. All are time spent waiting on the
CRM API.

The last line printed is one JSON object (see ``README.md`` next to this file).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere, and in spawned children
    sys.path.insert(0, str(REPO))

CONFIG = REPO / "config" / "pls_sync.yaml"
BATCH_SIZES = {"salesforce": 200, "hubspot": 100}
RUNS = ("full", "change_1pct", "unchanged")
TARGET_SECONDS = 15.0
TARGET_RSS_MIB = 1024.0
CHANGE_SHARE = 0.01
# Accounts per demo company in the CRM picture (primary + duplicates + subsidiaries + CRM-only,
# minus companies without an account); measured once on a sample, see companies_for_accounts.
_SAMPLE_COMPANIES = 5000


# --------------------------------------------------------------------------- endpoint classes


def destination_of(endpoint: str) -> str | None:
    """The destination a sandbox endpoint name belongs to (``sf.*`` or ``hs.*``)."""
    if endpoint.startswith("sf."):
        return "salesforce"
    if endpoint.startswith("hs."):
        return "hubspot"
    return None


def call_kind(endpoint: str) -> str:
    """``read``, ``write`` or ``other`` (describe, limits, login...) for a sandbox endpoint."""
    if endpoint.startswith("sf.bulk2.") or endpoint in (
        "sf.composite.sobjects.patch",
        "sf.sobject.patch",
        "sf.sobject.create",
        "sf.sobject.delete",
    ):
        return "write"
    if endpoint.startswith("hs.") and endpoint.rsplit(".", 1)[-1] in (
        "batch_update",
        "batch_create",
        "update",
        "create",
    ):
        return (
            "write" if not endpoint.startswith(("hs.properties", "hs.property_groups")) else "other"
        )
    if endpoint.startswith("hs.exports."):
        return "read"  # a CRM export (start, status polls, download) serves a full read
    if endpoint in ("sf.query", "sf.query_more", "sf.sobject.get") or (
        endpoint.startswith("hs.")
        and endpoint.rsplit(".", 1)[-1] in ("list", "search", "get", "batch_read")
        and not endpoint.startswith(("hs.properties", "hs.property_groups"))
    ):
        return "read"
    return "other"


def split_counts(counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Sandbox request counts by destination: read, write and other calls, and the raw counts."""
    out: dict[str, dict[str, Any]] = {}
    for endpoint, number in counts.items():
        name = destination_of(endpoint)
        if name is None:
            continue
        entry = out.setdefault(
            name, {"read_calls": 0, "write_calls": 0, "other_calls": 0, "endpoints": {}}
        )
        entry[f"{call_kind(endpoint)}_calls"] += number
        entry["endpoints"][endpoint] = number
    return out


def companies_for_accounts(accounts: int, seed: int) -> int:
    """How many demo companies give about ``accounts`` CRM accounts in the sandbox."""
    from pls_sync.demo_companies import demo_companies
    from pls_sync.sandbox.seed import crm_companies

    sample = demo_companies(seed, _SAMPLE_COMPANIES)
    picture = crm_companies(sample, seed)
    per_company = sum(1 for item in picture if item["has_account"]) / len(sample)
    return max(1, math.ceil(accounts / per_company))


# --------------------------------------------------------------------------- child: generation


def generate_warehouse(path: str, seed: int, companies: int, users: int, events: int) -> dict:
    """Write the demo warehouse; return its stats and the seconds it took (runs in a child)."""
    from connectors.demo_warehouse import generate_demo_warehouse

    started = time.perf_counter()
    stats = generate_demo_warehouse(
        path, seed=seed, companies=companies, users=users, events=events
    )
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "companies": stats.companies,
        "users": stats.users,
        "events": stats.events,
        "free_mail_users": stats.free_mail_users,
        "as_of": stats.as_of.isoformat(),
        "file_mib": round(os.path.getsize(path) / 2**20, 1),
    }


def change_usage(path: str, seed: int, companies: int, share: float) -> dict:
    """Give ``share`` of the companies one more active user (3 events yesterday); runs in a child.

    The new user was created 40 days before as-of, so the change shows in active users, total
    users and recent events (and in the score where that moves it), not in the age guard.
    """
    import duckdb

    from connectors.demo_warehouse import read_demo_as_of
    from pls_sync.demo_companies import demo_companies

    as_of = read_demo_as_of(path).replace(tzinfo=None)
    step = max(1, round(1 / share))
    domains = [c.domain for c in demo_companies(seed, companies)[::step]]
    started = time.perf_counter()
    con = duckdb.connect(path)
    try:
        row = con.execute("SELECT max(user_id) FROM users").fetchone()
        first_id = int(row[0] if row and row[0] is not None else 0) + 1
        ids = [first_id + i for i in range(len(domains))]
        emails = [f"bench.change{i}@{domain}" for i, domain in enumerate(domains)]
        con.execute(
            "INSERT INTO users (user_id, email, workspace_id, created_at, is_admin, title,"
            " seniority, department, company_size)"
            " SELECT i, e, 90000000 + i, $created, false, 'Analyst', 'ic', 'Data', NULL"
            " FROM (SELECT unnest($ids) AS i, unnest($emails) AS e)",
            {"ids": ids, "emails": emails, "created": as_of - timedelta(days=40)},
        )
        for hours in (20, 26, 30):
            con.execute(
                "INSERT INTO events (user_id, workspace_id, event_name, occurred_at)"
                " SELECT i, 90000000 + i, 'logged_in', $at FROM (SELECT unnest($ids) AS i)",
                {"ids": ids, "at": as_of - timedelta(hours=hours)},
            )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return {
        "companies_changed": len(domains),
        "users_added": len(ids),
        "events_added": 3 * len(ids),
        "seconds": round(time.perf_counter() - started, 3),
    }


# --------------------------------------------------------------------------- child: sandbox


def serve_sandbox(
    seed: int, companies: int, hubspot_burst: int, pipe: Connection
) -> None:  # pragma: no cover - runs in the sandbox process
    """Seed the sandbox from ``companies`` demo companies, report how to reach it, then serve."""
    from pls_sync.demo_companies import demo_companies
    from pls_sync.sandbox.server import Sandbox

    started = time.perf_counter()
    box = Sandbox(seed=seed, companies=demo_companies(seed, companies))
    if box.hubspot is not None:
        box.hubspot.limiter.max_per_window = hubspot_burst
    pipe.send(
        {
            "url": box.url,
            "session_id": box.session_id,
            "hubspot_token": box.hubspot_token,
            "has_hubspot": box.hubspot is not None,
            "salesforce_accounts": len(box.salesforce.records["Account"]),
            "hubspot_companies": len(box.hubspot.objects["companies"]) if box.hubspot else 0,
            "seed_seconds": round(time.perf_counter() - started, 3),
            "pid": os.getpid(),
        }
    )
    pipe.close()
    box.serve_forever()


class SandboxProcess:
    """The sandbox in its own process; counts are read over its admin endpoints."""

    def __init__(self, seed: int, companies: int, hubspot_burst: int):
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=serve_sandbox,
            args=(seed, companies, hubspot_burst, child),
            name="pls-sync-bench-sandbox",
            daemon=True,
        )
        self.process.start()
        child.close()
        if not parent.poll(3600):
            raise RuntimeError("the sandbox did not start within an hour")
        self.info: dict[str, Any] = parent.recv()
        self.url: str = self.info["url"]

    def _admin(self, name: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"{self.url}/__sandbox/{name}", method=method)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return json.loads(response.read() or b"null")

    def counts(self) -> dict[str, int]:
        """Requests by endpoint since the last reset."""
        return dict(self._admin("counts"))

    def reset_counts(self) -> None:
        """Zero the sandbox's counters."""
        self._admin("reset-counts", "POST")

    def peak_rss_mib(self) -> float | None:
        """The sandbox process's peak resident set (VmHWM), in MiB."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def stop(self) -> None:
        """Stop the sandbox process this benchmark started."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)


# --------------------------------------------------------------------------- child: one run


@dataclass
class CrmWait:
    """Seconds spent inside HTTP calls (and HubSpot pacing), by destination."""

    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter[str] = field(default_factory=Counter)
    pacing: float = 0.0
    local: threading.local = field(default_factory=threading.local)

    def add(self, name: str, seconds: float) -> None:
        """Count one HTTP call of ``seconds`` to destination ``name``."""
        self.seconds[name] += seconds
        self.calls[name] += 1

    @contextlib.contextmanager
    def timing(self, url: str) -> Iterator[None]:
        """Time the block as one call to the destination ``url`` belongs to (outermost only)."""
        depth = getattr(self.local, "depth", 0)
        self.local.depth = depth + 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self.local.depth = depth
            if depth == 0:
                self.add(_destination_of_url(url), time.perf_counter() - started)


def _destination_of_url(url: str) -> str:
    path = url.split("://", 1)[-1]
    path = path[path.find("/") :] if "/" in path else "/"
    if path.startswith("/services/"):
        return "salesforce"
    if path.startswith(("/crm/", "/oauth/", "/properties/")):
        return "hubspot"
    return "other"


def install_crm_wait(wait: CrmWait) -> None:
    """Time every HTTP call the CRM clients make, and the HubSpot pacers' sleeps."""
    import requests
    import urllib3

    from connectors.hubspot import RequestPacer, SearchPacer
    from connectors.hubspot_export import CompanyExport
    from connectors.salesforce_bulk import BulkIngest

    send = requests.Session.send

    def timed_send(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        with wait.timing(str(request.url)):
            return send(self, request, **kwargs)

    urlopen = urllib3.PoolManager.urlopen

    def timed_urlopen(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        with wait.timing(url):
            return urlopen(self, method, url, *args, **kwargs)

    def paced(acquire: Callable[[Any], None]) -> Callable[[Any], None]:
        def timed_acquire(self: Any) -> None:
            started = time.perf_counter()
            try:
                acquire(self)
            finally:
                wait.pacing += time.perf_counter() - started

        return timed_acquire

    # A body read after the call returned (HubSpot's raw-JSON reads and writes) is still the
    # CRM's answer arriving; inside a timed call, the outermost timing already counts it.
    read = urllib3.response.HTTPResponse.read

    def timed_read(self: Any, *args: Any, **kwargs: Any) -> Any:
        with wait.timing(str(getattr(self, "url", None) or "")):
            return read(self, *args, **kwargs)

    # Polling a Bulk API 2.0 job is waiting for Salesforce to process it.
    poll = BulkIngest._wait

    def timed_poll(self: Any, job_id: str) -> Any:
        with wait.timing("/services/data/bulk2-poll"):
            return poll(self, job_id)

    # So is the pause between two polls of a HubSpot CRM export (its HTTP calls are timed above).
    pause = CompanyExport._pause

    def timed_pause(self: Any, seconds: float) -> None:
        with wait.timing("/crm/v3/exports/export-poll"):
            pause(self, seconds)

    requests.Session.send = timed_send  # type: ignore[method-assign]
    urllib3.PoolManager.urlopen = timed_urlopen  # type: ignore[method-assign]
    urllib3.response.HTTPResponse.read = timed_read  # type: ignore[method-assign]
    RequestPacer.acquire = paced(RequestPacer.acquire)  # type: ignore[method-assign]
    # HubSpot's search limit ("five requests per second") is a pace of its own: its sleeps are
    # waiting on the CRM as much as the 10-second burst limit's are.
    SearchPacer.acquire = paced(SearchPacer.acquire)  # type: ignore[method-assign]
    BulkIngest._wait = timed_poll  # type: ignore[method-assign]
    CompanyExport._pause = timed_pause  # type: ignore[method-assign]


def install_stage_memory(marks: dict[str, float]) -> None:
    """Record this process's peak RSS (MiB) as each run stage ends: which stage set the peak."""
    from pls_sync.service import StageTimer

    stage = StageTimer.stage

    @contextlib.contextmanager
    def measured(self: Any, name: str) -> Iterator[None]:
        with stage(self, name):
            yield
        marks[name] = peak_rss_mib()

    StageTimer.stage = measured  # type: ignore[method-assign]


def peak_rss_mib() -> float:
    """This process's peak resident set, in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_once(job: dict[str, Any]) -> dict[str, Any]:
    """One ``run_sync`` in this (fresh) process; returns its measurements."""
    import cProfile
    import dataclasses
    import pstats

    wait = CrmWait()
    install_crm_wait(wait)
    marks: dict[str, float] = {}
    install_stage_memory(marks)
    os.environ.update(job["env"])
    from pls_sync.bootstrap import build_adapters
    from pls_sync.config import load_settings
    from pls_sync.logs import configure_logging
    from pls_sync.service import RunOptions, run_sync

    settings = load_settings(CONFIG)
    destinations = dict(settings.destinations)
    if "hubspot" in destinations:
        destinations["hubspot"] = dataclasses.replace(
            destinations["hubspot"], requests_per_10s=job["hubspot_burst"]
        )
    settings = dataclasses.replace(
        settings,
        destinations=destinations,
        plans_dir=Path(job["workdir"]) / "plans",
        crm_snapshot=dataclasses.replace(
            settings.crm_snapshot, skew_seconds=job["snapshot_skew_seconds"]
        ),
    )
    with open(Path(job["workdir"]) / f"run-{job['label']}.log", "w", encoding="utf-8") as logs:
        configure_logging("INFO", "json", stream=logs)
        only = tuple(job["destinations"])
        started = time.perf_counter()
        adapters = build_adapters(settings, only=only)
        setup_seconds = time.perf_counter() - started
        options = RunOptions(
            as_of=datetime.fromisoformat(job["as_of"]),
            command=f"bench-{job['label']}",
            plans_dir=settings.plans_dir,
            destinations=only,
        )
        batch_sizes = {n: d.batch_size for n, d in settings.destinations.items()}
        profile_text = None
        started = time.perf_counter()
        if job["profile"]:
            profiler = cProfile.Profile()
            result = profiler.runcall(
                run_sync, adapters, settings.scoring, options, batch_sizes=batch_sizes
            )
            wall = time.perf_counter() - started
            profiler.dump_stats(str(Path(job["workdir"]) / f"{job['label']}.prof"))
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            profile_text = out.getvalue()
        else:
            result = run_sync(adapters, settings.scoring, options, batch_sizes=batch_sizes)
            wall = time.perf_counter() - started
    summary = result.summary
    per_destination = {}
    for name, entry in summary["destinations"].items():
        per_destination[name] = {
            key: entry.get(key)
            for key in (
                "status",
                "error",
                "crm_records",
                "records_changed",
                "fields_changed",
                "min_write_calls",
                "records_written",
                "write_calls",
                "write_method",
                "rejected",
                "not_attempted",
                "api_calls",
                "crm_read",
            )
            if key in entry
        }
        per_destination[name]["match"] = entry.get("match")
        per_destination[name]["batch_size"] = batch_sizes.get(name)
        per_destination[name]["crm_wait_seconds"] = round(wait.seconds.get(name, 0.0), 3)
        per_destination[name]["http_calls_timed"] = wait.calls.get(name, 0)
    crm_wait = sum(wait.seconds.values()) + wait.pacing
    return {
        "status": summary["status"],
        "stages_seconds": summary["stages_seconds"],
        "setup_seconds": round(setup_seconds, 3),
        "wall_seconds": round(wall, 3),
        "http_seconds": round(sum(wait.seconds.values()), 3),
        "pacing_seconds": round(wait.pacing, 3),
        "crm_wait_seconds": round(crm_wait, 3),
        "seconds_excluding_crm_wait": round(wall - crm_wait, 3),
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_mib_after_stage": marks,
        "warehouse": summary["warehouse"],
        "scoring": {k: summary["scoring"][k] for k in ("scored", "tiers", "newly_qualified")},
        "destinations": per_destination,
        "profiled": bool(job["profile"]),
        "profile": profile_text,
    }


# --------------------------------------------------------------------------- orchestration


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` in a fresh spawned process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def destination_report(
    run: Mapping[str, Any], counts: Mapping[str, Mapping[str, Any]], name: str
) -> dict[str, Any]:
    """One destination's line of one run: calls seen by the sandbox, changes, the minimum."""
    entry = run["destinations"].get(name, {})
    seen = counts.get(name, {"read_calls": 0, "write_calls": 0, "other_calls": 0, "endpoints": {}})
    changed = entry.get("records_changed")
    batch = entry.get("batch_size") or BATCH_SIZES.get(name, 1)
    minimum = math.ceil(changed / batch) if changed is not None else None
    method = entry.get("write_method")
    return {
        "status": entry.get("status"),
        "error": entry.get("error"),
        "read_calls": seen["read_calls"],
        "write_calls": seen["write_calls"],
        "other_calls": seen["other_calls"],
        "min_write_calls": minimum,
        "changed_records": changed,
        "records_written": entry.get("records_written"),
        "rejected": entry.get("rejected"),
        "write_method": method,
        "crm_records": entry.get("crm_records"),
        "crm_read": entry.get("crm_read"),
        "crm_wait_seconds": entry.get("crm_wait_seconds"),
        "endpoints": seen["endpoints"],
        "connector_api_calls": entry.get("api_calls"),
    }


def target_checks(runs: Mapping[str, Mapping[str, Any]], peak_rss: float) -> dict[str, Any]:
    """The DESIGN.md section 5 targets, each with the value it was judged on."""
    full = runs["full"]
    writes_minimal = []
    for run in runs.values():
        for dest in run["destinations"].values():
            if str(dest.get("write_method") or "").startswith("bulk"):
                continue  # a Bulk 2.0 job is several calls whatever its size: judged apart
            writes_minimal.append(dest["write_calls"] == (dest["min_write_calls"] or 0))
    unchanged_writes = sum(d["write_calls"] for d in runs["unchanged"]["destinations"].values())
    return {
        "full_run_excl_crm_wait_le_15s": full["seconds_excluding_crm_wait"] <= TARGET_SECONDS,
        "every_run_excl_crm_wait_le_15s": all(
            r["seconds_excluding_crm_wait"] <= TARGET_SECONDS for r in runs.values()
        ),
        "peak_rss_lt_1024_mib": peak_rss < TARGET_RSS_MIB,
        "write_calls_eq_min": bool(writes_minimal) and all(writes_minimal),
        "unchanged_rerun_zero_writes": unchanged_writes == 0,
    }


def print_table(result: Mapping[str, Any]) -> None:
    """The human-readable summary."""
    scale = result["scale"]
    print(
        f"\nscale: {scale['users']:,} users, {scale['events']:,} events, "
        f"{scale['companies']:,} companies; CRM: {scale['salesforce_accounts']:,} Salesforce "
        f"accounts, {scale['hubspot_companies']:,} HubSpot companies"
    )
    print(
        f"generation {result['generation_seconds']:.1f} s (not part of the target), "
        f"sandbox seeding {result['sandbox_seed_seconds']:.1f} s, "
        f"sandbox peak RSS {result['sandbox_peak_rss_mib']} MiB"
    )
    header = f"{'run':<12} {'wall s':>8} {'crm wait':>9} {'excl wait':>10} {'rss MiB':>8}  stages"
    print("\n" + header + "\n" + "-" * len(header))
    for label, run in result["runs"].items():
        stages = ", ".join(f"{k} {v:.2f}" for k, v in run["stages_seconds"].items())
        print(
            f"{label:<12} {run['wall_seconds']:>8.2f} {run['crm_wait_seconds']:>9.2f} "
            f"{run['seconds_excluding_crm_wait']:>10.2f} {run['peak_rss_mib']:>8.1f}  {stages}"
        )
    header = (
        f"{'run':<12} {'destination':<11} {'read':>6} {'write':>6} {'min':>6} {'changed':>8} "
        f"{'method':<14} {'crm wait s':>10}  read mode"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for label, run in result["runs"].items():
        for name, dest in run["destinations"].items():
            mode = (dest.get("crm_read") or {}).get("mode", "")
            print(
                f"{label:<12} {name:<11} {dest['read_calls']:>6} {dest['write_calls']:>6} "
                f"{dest['min_write_calls'] if dest['min_write_calls'] is not None else '-':>6} "
                f"{dest['changed_records'] if dest['changed_records'] is not None else '-':>8} "
                f"{dest['write_method'] or '-':<14} {dest['crm_wait_seconds'] or 0:>10.2f}  {mode}"
                + (f"  ERROR {dest['error']}" if dest.get("error") else "")
            )
    print("\ntargets: " + ", ".join(f"{k}={v}" for k, v in result["targets"].items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000_000)
    parser.add_argument("--crm-accounts", type=int, default=100_000)
    parser.add_argument(
        "--companies", type=int, default=None, help="default: enough for --crm-accounts"
    )
    parser.add_argument("--destinations", default="salesforce,hubspot")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--hubspot-burst",
        type=int,
        default=100,
        help="HubSpot requests per 10 s, in the sandbox and the client (the real default: 100)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="full",
        choices=RUNS,
        help="profile one run under cProfile (default: the full sync)",
    )
    parser.add_argument(
        "--warehouse",
        type=Path,
        help="a cached demo warehouse: generated there when missing, else reused (copied)",
    )
    parser.add_argument(
        "--snapshot-skew-seconds",
        type=int,
        default=0,
        help="overlap of incremental CRM reads; the config's 300 s would cover the previous "
        "run here, which hours apart in production it does not",
    )
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table, the profile and, last, the JSON line."""
    args = parse_args(argv)
    wanted = tuple(d.strip() for d in args.destinations.split(",") if d.strip())
    unknown = [d for d in wanted if d not in BATCH_SIZES]
    if unknown or not wanted:
        print(f"unknown destinations: {', '.join(unknown) or '(none)'}", file=sys.stderr)
        return 2
    companies = args.companies or companies_for_accounts(args.crm_accounts, args.seed)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pls-sync-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    warehouse = workdir / "warehouse.duckdb"
    log = lambda message: print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # noqa: E731
    sandbox: SandboxProcess | None = None
    generated: dict[str, Any]
    try:
        if args.warehouse and not args.warehouse.exists():
            log(f"generating {args.users:,} users, {args.events:,} events, {companies:,} companies")
            generated = in_child(
                generate_warehouse,
                str(args.warehouse),
                args.seed,
                companies,
                args.users,
                args.events,
            )
            log(f"generated in {generated['seconds']:.1f} s ({generated['file_mib']} MiB)")
            shutil.copyfile(args.warehouse, warehouse)
        elif args.warehouse:
            shutil.copyfile(args.warehouse, warehouse)
            from connectors.demo_warehouse import read_demo_as_of

            generated = {
                "seconds": 0.0,
                "reused": str(args.warehouse),
                "as_of": read_demo_as_of(warehouse).isoformat(),
                "users": args.users,
                "events": args.events,
                "companies": companies,
            }
            log(f"reusing warehouse {args.warehouse}")
        else:
            log(f"generating {args.users:,} users, {args.events:,} events, {companies:,} companies")
            generated = in_child(
                generate_warehouse, str(warehouse), args.seed, companies, args.users, args.events
            )
            log(f"generated in {generated['seconds']:.1f} s ({generated['file_mib']} MiB)")
        log("starting the sandbox")
        sandbox = SandboxProcess(args.seed, companies, args.hubspot_burst)
        info = sandbox.info
        log(
            f"sandbox at {sandbox.url}: {info['salesforce_accounts']:,} accounts, "
            f"{info['hubspot_companies']:,} companies, seeded in {info['seed_seconds']:.1f} s"
        )
        if "hubspot" in wanted and not info["has_hubspot"]:
            print("the sandbox serves no HubSpot API", file=sys.stderr)
            return 2
        env = {
            "PLS_SYNC_WAREHOUSE_URL": f"duckdb:///{warehouse}",
            "PLS_SYNC_STATE_URL": f"sqlite:///{workdir / 'state.sqlite'}",
            "PLS_SYNC_SALESFORCE_ENABLED": "true" if "salesforce" in wanted else "false",
            "PLS_SYNC_HUBSPOT_ENABLED": "true" if "hubspot" in wanted else "false",
            "SALESFORCE_INSTANCE_URL": sandbox.url,
            "SALESFORCE_SESSION_ID": info["session_id"],
            "HUBSPOT_BASE_URL": sandbox.url,
            "HUBSPOT_ACCESS_TOKEN": info["hubspot_token"],
        }
        runs: dict[str, dict[str, Any]] = {}
        change: dict[str, Any] = {}
        profile_text = None
        crashed: str | None = None
        for label in RUNS:
            if label == "change_1pct":
                change = in_child(change_usage, str(warehouse), args.seed, companies, CHANGE_SHARE)
                log(f"changed usage: {change}")
            sandbox.reset_counts()
            job = {
                "label": label,
                "env": env,
                "workdir": str(workdir),
                "as_of": generated["as_of"],
                "destinations": list(wanted),
                "hubspot_burst": args.hubspot_burst,
                "snapshot_skew_seconds": args.snapshot_skew_seconds,
                "profile": args.profile == label,
            }
            log(f"run {label}")
            try:
                run = in_child(run_once, job)
            except Exception as exc:  # a crashed run is a result too: report it, stop here
                log(f"run {label} crashed: {type(exc).__name__}: {exc}")
                crashed = f"{type(exc).__name__}: {exc}"
                break
            counts = split_counts(sandbox.counts())
            if run.get("profile"):
                profile_text = run["profile"]
            run["destinations"] = {name: destination_report(run, counts, name) for name in wanted}
            runs[label] = run
            log(
                f"run {label}: {run['status']}, wall {run['wall_seconds']:.1f} s, crm wait "
                f"{run['crm_wait_seconds']:.1f} s, rss {run['peak_rss_mib']} MiB"
            )
        peak = max((run["peak_rss_mib"] for run in runs.values()), default=0.0)
        result: dict[str, Any] = {
            "benchmark": "pls-sync scale",
            "scale": {
                "users": generated["users"],
                "events": generated["events"],
                "crm_accounts_requested": args.crm_accounts,
                "companies": companies,
                "salesforce_accounts": info["salesforce_accounts"],
                "hubspot_companies": info["hubspot_companies"],
                "destinations": list(wanted),
                "seed": args.seed,
                "hubspot_burst_per_10s": args.hubspot_burst,
                "snapshot_skew_seconds": args.snapshot_skew_seconds,
                "cpus": os.cpu_count(),
            },
            "generation_seconds": generated["seconds"],
            "sandbox_seed_seconds": info["seed_seconds"],
            "sandbox_peak_rss_mib": sandbox.peak_rss_mib(),
            "change": change,
            "runs": {
                label: {k: v for k, v in run.items() if k != "profile"}
                for label, run in runs.items()
            },
            "peak_rss_mib": peak,
            "crm_wait_measured_as": (
                "client side: requests.Session.send + urllib3.PoolManager.urlopen per call, "
                "by URL path, plus HubSpot request- and search-pacer sleeps, body reads after a call "
                "returned, Bulk API 2.0 job polling and HubSpot export poll pauses"
            ),
        }
        if crashed is not None:
            result["crashed"] = crashed
            result["targets"] = None
            print(json.dumps(result, default=str, separators=(",", ":")))
            return 1
        result["targets"] = target_checks(result["runs"], peak)
        print_table(result)
        if profile_text:
            print("\nprofile of the full sync (cumulative, top 25; its timings include cProfile):")
            print(profile_text)
        print(json.dumps(result, default=str, separators=(",", ":")))
        return 0
    finally:
        if sandbox is not None:
            sandbox.stop()
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
