"""The whole process a user waits for: `pls-sync run` and `pls-sync --help`, wall and peak RSS.

Run from the repository root (a few minutes, most of it generating the warehouse)::

    python benchmarks/process.py [--crm-accounts 10000] [--users 200000] [--events 2000000]

``benchmarks/scale.py`` times ``run_sync`` inside one process; this times what a cron job or a
person pays per run: interpreter start, imports, config, building the clients, the run, exit.
It generates the demo warehouse for ``--crm-accounts`` CRM accounts, starts the CRM sandbox in
its own process (HubSpot pacing off: ``--hubspot-burst`` requests a 10 s window, in the sandbox
and in the client), then runs ``pls-sync run`` as a child process, each time measured like
``/usr/bin/time -v`` does (wall clock, and the child's maximum resident set from ``wait4``):

1. ``full``: the first run (empty state store and CRM snapshot; not a target);
2. ``unchanged``: the same data again (it must write nothing);
3. ``change_1pct``: after 1% of the companies got one more active user (as in scale.py);
4. ``unchanged_again``.

Every run is at the warehouse's as-of time (``--as-of``), so nothing moves but the data.
``pls-sync --help`` is timed five times (the median and the best are printed). The CRM
snapshot's overlap (``crm_snapshot.skew_seconds``) is 0 as in scale.py: back-to-back runs
would otherwise reread the previous run's writes, which runs minutes apart do not.
Nothing is asserted; the targets of issue 16 are printed beside the figures. Each run's output
and summary are kept in the work directory (``--workdir``; ``<run>.log``, ``<run>.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale import (  # noqa: E402
    SandboxProcess,
    change_usage,
    companies_for_accounts,
    generate_warehouse,
    in_child,
)

RUNS = ("full", "unchanged", "change_1pct", "unchanged_again")
TARGET_UNCHANGED_SECONDS = 1.5
TARGET_HELP_SECONDS = 0.3


def timed(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``command``; its wall seconds, peak RSS (MiB, from wait4) and exit code."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_seconds": round(wall, 3),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "exit_code": process.returncode,
        "output": output.decode("utf-8", "replace"),
    }


def prepare_config(folder: Path, hubspot_burst: int) -> Path:
    """The shipped config and mappings, with the client's HubSpot pacing at ``hubspot_burst``
    and no snapshot overlap."""
    shutil.copytree(ROOT / "config", folder / "config")
    shutil.copytree(ROOT / "mappings", folder / "mappings")
    main = folder / "config" / "pls_sync.yaml"
    text = main.read_text()
    # The client's pacing: the config allows at most 1000 a window, which 10k companies never
    # reach (a full read is about 100 list calls).
    burst = min(hubspot_burst, 1000)
    text = re.sub(r"requests_per_10s: \d+", f"requests_per_10s: {burst}", text)
    text = re.sub(r"skew_seconds: \d+", "skew_seconds: 0", text)
    main.write_text(text)
    return main


def summary_of(path: Path) -> dict[str, Any]:
    """What a run's summary says about its writes."""
    summary = json.loads(path.read_text())
    return {
        "status": summary["status"],
        "writes": {
            name: {
                "records_changed": entry.get("records_changed"),
                "write_calls": entry.get("write_calls"),
                "crm_read": (entry.get("crm_read") or {}).get("mode"),
            }
            for name, entry in summary["destinations"].items()
        },
        "stages_seconds": summary.get("stages_seconds"),
    }


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crm-accounts", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hubspot-burst", type=int, default=100_000)
    parser.add_argument("--warehouse", type=Path, help="cache the generated warehouse here")
    parser.add_argument("--workdir", type=Path)
    return parser.parse_args()


def main() -> int:
    """Run the benchmark and print the figures, then one JSON line."""
    args = parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pls-sync-process-"))
    workdir.mkdir(parents=True, exist_ok=True)
    companies = companies_for_accounts(args.crm_accounts, args.seed)
    warehouse = workdir / "warehouse.duckdb"
    if args.warehouse and args.warehouse.exists():
        shutil.copyfile(args.warehouse, warehouse)
    else:
        print(f"generating {args.users:,} users, {args.events:,} events, {companies:,} companies")
        generated = in_child(
            generate_warehouse, str(warehouse), args.seed, companies, args.users, args.events
        )
        print(f"generated in {generated['seconds']:.1f} s")
        if args.warehouse:
            shutil.copyfile(warehouse, args.warehouse)
    sandbox = SandboxProcess(args.seed, companies, args.hubspot_burst)
    try:
        info = sandbox.info
        print(
            f"sandbox: {info['salesforce_accounts']:,} Salesforce accounts, "
            f"{info['hubspot_companies']:,} HubSpot companies"
        )
        config = prepare_config(workdir, args.hubspot_burst)
        env = {
            **os.environ,
            "PLS_SYNC_WAREHOUSE_URL": f"duckdb:///{warehouse}",
            "PLS_SYNC_STATE_URL": f"sqlite:///{workdir / 'state.sqlite'}",
            "PLS_SYNC_SALESFORCE_ENABLED": "true",
            "PLS_SYNC_HUBSPOT_ENABLED": "true",
            "SALESFORCE_INSTANCE_URL": sandbox.url,
            "SALESFORCE_SESSION_ID": info["session_id"],
            "HUBSPOT_BASE_URL": sandbox.url,
            "HUBSPOT_ACCESS_TOKEN": info["hubspot_token"],
        }
        pls_sync = shutil.which("pls-sync") or "pls-sync"
        from connectors.demo_warehouse import read_demo_as_of

        # The warehouse's day: windows and ages do not slide between the runs.
        as_of = read_demo_as_of(warehouse).isoformat()
        runs: dict[str, Any] = {}
        for label in RUNS:
            if label == "change_1pct":
                change = in_child(change_usage, str(warehouse), args.seed, companies, 0.01)
                print(f"changed usage of {change['companies_changed']} companies")
            summary = workdir / f"{label}.json"
            result = timed(
                [pls_sync, "run", "--config", str(config), "--as-of", as_of]
                + ["--summary-json", str(summary)],
                env,
                workdir,
            )
            (workdir / f"{label}.log").write_text(result["output"], encoding="utf-8")
            if result["exit_code"] != 0:
                print(result["output"][-3000:], file=sys.stderr)
                return 1
            runs[label] = {k: v for k, v in result.items() if k != "output"}
            runs[label].update(summary_of(summary))
            writes = ", ".join(
                f"{name} {w['records_changed']} changed in {w['write_calls']} calls"
                for name, w in runs[label]["writes"].items()
            )
            print(
                f"{label:<16} wall {result['wall_seconds']:6.2f} s  "
                f"peak RSS {result['peak_rss_mib']:6.1f} MiB  ({writes})"
            )
        helps = [timed([pls_sync, "--help"], env, workdir) for _ in range(5)]
        help_seconds = [h["wall_seconds"] for h in helps]
        print(
            f"{'--help':<16} wall {statistics.median(help_seconds):6.2f} s median, "
            f"{min(help_seconds):.2f} s best  peak RSS {helps[0]['peak_rss_mib']:.1f} MiB"
        )
    finally:
        sandbox.stop()
    unchanged = runs["unchanged"]["wall_seconds"]
    targets = {
        f"unchanged_run_le_{TARGET_UNCHANGED_SECONDS}s": unchanged <= TARGET_UNCHANGED_SECONDS,
        f"help_le_{TARGET_HELP_SECONDS}s": statistics.median(help_seconds) <= TARGET_HELP_SECONDS,
        "unchanged_runs_write_nothing": all(
            (w["write_calls"] or 0) == 0
            for label in ("unchanged", "unchanged_again")
            for w in runs[label]["writes"].values()
        ),
    }
    print(f"targets: {targets}")
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "crm_accounts": args.crm_accounts,
        "companies": companies,
        "users": args.users,
        "events": args.events,
        "runs": runs,
        "help_seconds": help_seconds,
        "targets": targets,
    }
    print(json.dumps(record, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
