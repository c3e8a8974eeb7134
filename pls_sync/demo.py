"""``pls-sync demo``: the whole product on the embedded default, with nothing to set up.

Generates the DuckDB demo warehouse (once), starts the CRM sandbox on loopback, runs a full
sync to every destination the sandbox serves, then a second run that must write nothing, and
shows the top accounts as a rep sees them on the CRM record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pls_sync.errors import ConfigError, PlsSyncError

DEMO_DIR = Path(".pls-sync")
DEMO_WAREHOUSE = DEMO_DIR / "demo.duckdb"
DEMO_STATE = DEMO_DIR / "state.sqlite"  # the default state store, so explain/status see the demo
SANDBOX_ENV = DEMO_DIR / "sandbox.env"  # written by `pls-sync sandbox`, read by --sandbox
SANDBOX_ENV_HEADER = (
    "# The CRM sandbox's settings, written by `pls-sync sandbox`; --sandbox loads them.\n"
    "# Local stand-in credentials only: they open nothing but the sandbox on 127.0.0.1.\n"
)


@contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the demo and restore them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def sandbox_settings(url: str, session_id: str, hubspot_token: str) -> dict[str, str]:
    """The environment that points both CRM connectors at a sandbox on ``url``."""
    return {
        "SALESFORCE_INSTANCE_URL": url,
        "SALESFORCE_SESSION_ID": session_id,
        "HUBSPOT_BASE_URL": url,
        "HUBSPOT_ACCESS_TOKEN": hubspot_token,
        "PLS_SYNC_HUBSPOT_ENABLED": "true",
    }


def write_sandbox_env(path: Path, values: dict[str, str]) -> None:
    """Write ``KEY=value`` lines readable by the owner only (0600), replacing the file whole."""
    from pls_sync.files import replacing

    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, mode=0o600) as out:
        out.write(SANDBOX_ENV_HEADER)
        out.writelines(f"{key}={value}\n" for key, value in values.items())


def read_sandbox_env(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of a sandbox settings file (``#`` comments and blanks skipped).

    Raises ``FileNotFoundError`` when there is none, ``ValueError`` on a line that is not
    ``KEY=value``.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{path}:{number}: not KEY=value")
        values[key.strip()] = value.strip()
    return values


def sandbox_answers(url: str, timeout: float = 2.0) -> bool:
    """True when a pls-sync CRM sandbox answers its health check at ``url``."""
    import json
    import urllib.request

    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        return False
    try:
        with urllib.request.urlopen(
            f"{url.rstrip('/')}/__sandbox/health", timeout=timeout
        ) as reply:
            return bool(json.loads(reply.read()).get("status") == "ok")
    except (OSError, ValueError, AttributeError):
        return False


def ensure_warehouse(
    console: Console,
    path: Path,
    *,
    companies: int,
    users: int | None,
    events: int | None,
    seed: int,
    fresh: bool,
) -> datetime:
    """Create the demo warehouse unless it exists; return the as-of time its data was made for."""
    from connectors.demo_warehouse import generate_demo_warehouse, read_demo_as_of

    if path.exists() and not fresh:
        as_of = read_demo_as_of(path)
        console.print(f"Using the demo warehouse {path} (data as of {as_of.date()}).")
        return as_of
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("Generating the demo warehouse", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(
                task,
                description=f"Generating the demo warehouse: {stage}",
                completed=done,
                total=total,
            )

        stats = generate_demo_warehouse(
            path, seed=seed, companies=companies, users=users, events=events, progress=progress
        )
    console.print(
        f"Generated {path}: {stats.companies} companies, {stats.users} users "
        f"({stats.free_mail_users} on free mail), {stats.events} events, as of {stats.as_of.date()}."
    )
    return stats.as_of


def render_crm_accounts(
    console: Console, destination: object, mapping: object, limit: int = 12
) -> None:
    """The top accounts as the rep sees them on the CRM record, read back from the CRM."""
    from pls_sync.mapping import DestinationMapping

    assert isinstance(mapping, DestinationMapping)
    records = list(destination.read_records(mapping))  # type: ignore[attr-defined]
    by_source = {f.source: f.target for f in mapping.fields}
    score_f, tier_f = by_source.get("score"), by_source.get("tier")
    signals_f, channel_f = by_source.get("signals"), by_source.get("lead_channel")

    def score_of(record: object) -> float:
        value = record.fields.get(score_f) if score_f else None  # type: ignore[attr-defined]
        try:
            return float(value) if value not in (None, "") else -1.0
        except (TypeError, ValueError):
            return -1.0

    ranked = sorted(records, key=lambda r: (-score_of(r), r.id))[:limit]
    table = Table(title=f"{mapping.destination}: top {mapping.object} records as a rep sees them")
    for column in ("record", "name", "score", "tier", "channel", "signals"):
        table.add_column(column, overflow="fold")
    for record in ranked:
        f = record.fields
        table.add_row(
            record.id,
            record.name or "",
            f"{score_of(record):.0f}" if score_of(record) >= 0 else "",
            str(f.get(tier_f) or "") if tier_f else "",
            str(f.get(channel_f) or "") if channel_f else "",
            str(f.get(signals_f) or "") if signals_f else "",
        )
    console.print(table)


def run_demo(
    console: Console,
    config: Path,
    *,
    companies: int = 400,
    users: int | None = None,
    events: int | None = None,
    fresh: bool = False,
    seed: int = 7,
) -> int:
    """Run the demo end to end; return the exit code (0 when both runs did what they should)."""
    from pls_sync.bootstrap import build_adapters
    from pls_sync.config import load_settings
    from pls_sync.demo_companies import demo_companies
    from pls_sync.logs import configure_logging
    from pls_sync.report import ranking_key, render_accounts, render_summary
    from pls_sync.sandbox.server import Sandbox
    from pls_sync.service import RunOptions, run_sync

    started = time.perf_counter()
    demo_env = {
        "PLS_SYNC_WAREHOUSE_URL": f"duckdb:///{DEMO_WAREHOUSE}",
        "PLS_SYNC_STATE_URL": f"sqlite:///{DEMO_STATE}",
        "PLS_SYNC_SALESFORCE_ENABLED": "true",
        "PLS_SYNC_HUBSPOT_ENABLED": "true",
        "PLS_SYNC_ALERTS_ENABLED": "true",  # rep alerts are off by default, on in the demo
    }
    # The config is checked before anything is created or started.
    with patched_env(demo_env):
        try:
            settings = load_settings(config)
        except ConfigError as exc:
            console.print("[bold red]Configuration error[/bold red]")
            for issue in exc.issues:
                console.print(f"  {issue}", markup=False, highlight=False)
            return 2
    DEMO_DIR.mkdir(exist_ok=True)
    if fresh and DEMO_STATE.exists():
        DEMO_STATE.unlink()
    as_of = ensure_warehouse(
        console,
        DEMO_WAREHOUSE,
        companies=companies,
        users=users,
        events=events,
        seed=seed,
        fresh=fresh,
    )
    # The CRM's deals and opportunities tell the same story as the warehouse, as of its day.
    with Sandbox(seed=seed, companies=demo_companies(seed, companies), as_of=as_of) as box:
        console.print(f"CRM sandbox serving Salesforce and HubSpot on {box.url}")
        env = {**demo_env, **sandbox_settings(box.url, box.session_id, box.hubspot_token)}
        with patched_env(env):
            configure_logging(settings.logging.level, settings.logging.format)
            batch_sizes = {n: d.batch_size for n, d in settings.destinations.items()}
            try:
                # The sandbox is new: a snapshot left by an earlier demo describes another CRM.
                adapters = build_adapters(settings, full_refresh=True)
                first = run_sync(
                    adapters,
                    settings.scoring,
                    RunOptions(
                        as_of=as_of,
                        command="demo",
                        plans_dir=settings.plans_dir,
                        api_budget_share=settings.api_budget_share,
                        history_days=settings.history_days,
                    ),
                    batch_sizes=batch_sizes,
                    channels=settings.channels,
                )
                render_summary(console, first.summary)
                first_counts = box.counts()
                box.reset_counts()
                for destination in adapters.destinations.values():
                    if hasattr(destination, "force_full"):
                        destination.force_full = False  # the rerun reads incrementally
                second = run_sync(
                    adapters,
                    settings.scoring,
                    RunOptions(
                        as_of=as_of,
                        command="demo-rerun",
                        plans_dir=settings.plans_dir,
                        api_budget_share=settings.api_budget_share,
                        history_days=settings.history_days,
                    ),
                    batch_sizes=batch_sizes,
                    channels=settings.channels,
                )
            except PlsSyncError as exc:
                console.print(f"[bold red]Demo run failed:[/bold red] {exc}", highlight=False)
                return 1
            second_counts = box.counts()
            writes_2 = {
                name: dest.get("write_calls", 0)
                for name, dest in second.summary["destinations"].items()
            }
            console.print(
                "Second run over unchanged data: "
                + ", ".join(f"{name} {calls} write calls" for name, calls in writes_2.items())
            )
            render_accounts(console, first.scored.results, "Top product accounts")
            for name, destination in adapters.destinations.items():
                render_crm_accounts(console, destination, adapters.mappings[name])
            console.print(
                "Sandbox requests, first run: "
                + ", ".join(f"{k} {v}" for k, v in sorted(first_counts.items()))
            )
            console.print(
                "Sandbox requests, second run: "
                + ", ".join(f"{k} {v}" for k, v in sorted(second_counts.items()))
            )
    took = time.perf_counter() - started
    console.print(
        f"Demo finished in {took:.1f} s at {datetime.now(UTC):%H:%M:%S} UTC. State store: "
        f"{DEMO_STATE}; plans: {settings.plans_dir}/latest.json."
    )
    top = min(first.scored.results, key=ranking_key, default=None)  # the top of the table
    print_next_steps(console, as_of, top.account.domain if top else "<domain>")
    ok = first.status == "succeeded" and second.status == "succeeded" and not any(writes_2.values())
    return 0 if ok else 1


def print_next_steps(console: Console, as_of: datetime, domain: str) -> None:
    """What to try after the demo: commands that work as printed, on the demo's data."""
    day = as_of.date().isoformat()
    steps = [
        ("pls-sync sandbox", "in another terminal: the CRM, kept running"),
        (f"pls-sync plan --sandbox --as-of {day}", "the field diff against it"),
        (f"pls-sync explain {domain} --as-of {day}", "the top account, explained"),
        ("pls-sync lists abm", "usage and no buyer: for marketing"),
        ("pls-sync export accounts.csv", "every account, for a spreadsheet"),
    ]
    width = max(len(command) for command, _ in steps)
    console.print("Next steps:")
    for command, why in steps:
        line = f"  {command:<{width}}  # {why}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
