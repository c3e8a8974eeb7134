"""The ``pls-sync`` command line. Exit codes: 0 done, 1 run failed, 2 bad config or usage."""

from __future__ import annotations

import contextlib
import csv
import json
import signal
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console

from pls_sync import __version__
from pls_sync.config import Settings, load_settings
from pls_sync.errors import ConfigError, PlsSyncError, redact
from pls_sync.logs import configure_logging
from pls_sync.mapping import DestinationMapping
from pls_sync.planning import AccountResult
from pls_sync.ports import CrmDestination

app = typer.Typer(
    name="pls-sync",
    help="Score product accounts as PQAs from warehouse usage and sync them into Salesforce and HubSpot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
log = structlog.get_logger("pls_sync.cli")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Main config file.", envvar="PLS_SYNC_CONFIG")
]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Score as of this UTC date or datetime (default: now)."),
]
SummaryOption = Annotated[
    Path | None, typer.Option("--summary-json", help="Also write the run summary as JSON here.")
]
FullRefreshOption = Annotated[
    bool,
    typer.Option(
        "--full-refresh", help="Read every CRM record, not only those changed since the last run."
    ),
]
DestinationOption = Annotated[
    list[str] | None,
    typer.Option("--destination", "-d", help="Only this destination (repeatable)."),
]


def parse_as_of(value: str | None) -> datetime:
    """``--as-of``: an ISO date (midnight UTC) or datetime (naive means UTC); default now."""
    if not value:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"not an ISO date or datetime: {value!r}", param_hint="--as-of"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def load_or_exit(config: Path) -> Settings:
    """Load settings, or print every config issue and exit 2 before anything runs."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err_console.print(f"[bold red]Configuration error[/bold red] ({len(exc.issues)} issue(s)):")
        for issue in exc.issues:
            err_console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def write_summary_json(path: Path | None, summary: dict[str, Any]) -> None:
    """Write the summary to ``path`` when asked."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")


def _sync(
    config: Path,
    as_of: str | None,
    summary_json: Path | None,
    destination: list[str] | None,
    *,
    dry_run: bool,
    full_refresh: bool = False,
) -> None:
    from pls_sync.bootstrap import build_adapters
    from pls_sync.report import render_plan, render_summary
    from pls_sync.service import RunOptions, run_sync

    settings = load_or_exit(config)
    when = parse_as_of(as_of)
    only = tuple(destination) if destination else None
    unknown = sorted(set(only or ()) - set(settings.destinations))
    if unknown:
        raise typer.BadParameter(
            f"unknown destination(s) {', '.join(unknown)}; configured: "
            + ", ".join(sorted(settings.destinations)),
            param_hint="--destination",
        )
    options = RunOptions(
        as_of=when,
        command="plan" if dry_run else "run",
        dry_run=dry_run,
        plans_dir=settings.plans_dir,
        destinations=only,
        api_budget_share=settings.api_budget_share,
        history_days=settings.history_days,
    )
    # SIGTERM (docker stop, Kubernetes) lets the write batch in flight finish, then exits 0.
    previous_handler = signal.signal(signal.SIGTERM, lambda _sig, _frame: options.stop.set())
    try:
        adapters = build_adapters(settings, only=only, full_refresh=full_refresh)
        result = run_sync(
            adapters,
            settings.scoring,
            options,
            batch_sizes={n: d.batch_size for n, d in settings.destinations.items()},
            channels=settings.channels,
        )
    except PlsSyncError as exc:
        err_console.print(f"[bold red]Run failed:[/bold red] {redact(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    render_summary(console, result.summary)
    if dry_run:
        for outcome in result.outcomes.values():
            if outcome.plan is not None and outcome.plan.changes:
                render_plan(console, outcome.plan)
    write_summary_json(summary_json, result.summary)
    if result.status not in ("succeeded", "stopped"):
        raise typer.Exit(EXIT_FAILED)


@app.command()
def run(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    summary_json: SummaryOption = None,
    destination: DestinationOption = None,
    full_refresh: FullRefreshOption = False,
) -> None:
    """Run one sync now: read, score, match and write the changed fields."""
    _sync(config, as_of, summary_json, destination, dry_run=False, full_refresh=full_refresh)


@app.command()
def plan(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    summary_json: SummaryOption = None,
    destination: DestinationOption = None,
    full_refresh: FullRefreshOption = False,
) -> None:
    """The same as run without writing: print the field diff and save it to the plans folder."""
    _sync(config, as_of, summary_json, destination, dry_run=True, full_refresh=full_refresh)


@app.command()
def validate(config: ConfigOption = Path("config/pls_sync.yaml")) -> None:
    """Check config and mappings; against the live CRM schema when credentials are present."""
    from pls_sync.bootstrap import build_destination, enabled_destinations
    from pls_sync.planning import missing_targets

    settings = load_or_exit(config)
    console.print(f"Config OK: {config}")
    failed = unreachable = False
    for name in enabled_destinations(settings):
        mapping = settings.destinations[name].mapping
        try:
            client = build_destination(name, settings)
        except PlsSyncError as exc:
            console.print(f"{name}: mapping OK; live schema not checked ({exc})", highlight=False)
            continue
        try:
            problems = missing_targets(mapping, client.describe(mapping.object))
        except PlsSyncError as exc:
            console.print(f"[red]{name}: cannot read the schema: {exc}[/red]", highlight=False)
            unreachable = True
            continue
        if problems:
            failed = True
            for problem in problems:
                console.print(f"[red]{mapping.source_file}: {problem}[/red]", highlight=False)
        else:
            console.print(f"{name}: all {len(mapping.fields)} mapped fields exist and are writable")
    if failed:
        raise typer.Exit(EXIT_CONFIG)
    if unreachable:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="CSV file to write.")],
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    with_crm: Annotated[
        bool,
        typer.Option("--with-crm/--no-crm", help="Also match CRM records (needs credentials)."),
    ] = False,
) -> None:
    """Write every scored account to a spreadsheet: no CRM needed."""
    from pls_sync.bootstrap import build_adapters
    from pls_sync.service import analyse, match_destination

    settings = load_or_exit(config)
    when = parse_as_of(as_of)
    try:
        adapters = build_adapters(settings, with_destinations=with_crm)
        scored, _leads = analyse(adapters, settings.scoring, settings.channels, when)
        matched: dict[str, dict[str, str]] = {}
        for name, error in adapters.destination_errors.items():
            err_console.print(f"{name}: not matched ({redact(error)})", highlight=False)
        if with_crm and adapters.destination_errors and not adapters.destinations:
            raise PlsSyncError("no CRM could be reached for --with-crm")
        for name, destination in adapters.destinations.items():
            outcome = match_destination(destination, adapters.mappings[name], scored.results)
            assert outcome.report is not None
            for key, match in outcome.report.matches.items():
                if match.record_id:
                    matched.setdefault(key, {})[name] = match.record_id
    except PlsSyncError as exc:
        err_console.print(
            f"[bold red]Export failed:[/bold red] {redact(str(exc))}", highlight=False
        )
        raise typer.Exit(EXIT_FAILED) from None
    components = [c.name for c in settings.scoring.components]
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["account", "domain", "score", "tier", "qualified_since", "score_change"]
            + [f"{c}_points" for c in components]
            + [
                "signals",
                "lead_channel",
                "motion",
                "buyers",
                "active_users_28d",
                "first_seen",
                "age_guard",
                "salesforce_id",
                "hubspot_id",
            ]
        )
        ranked = sorted(scored.results, key=lambda r: (-r.score.score, r.account.key))
        for result in ranked:
            points = {c.name: round(c.points, 1) for c in result.score.components}
            ids = matched.get(result.account.key, {})
            writer.writerow(
                [
                    result.account.key,
                    result.account.domain,
                    result.score.score,
                    result.score.tier,
                    result.state.qualified_since.isoformat()
                    if result.state.qualified_since
                    else "",
                    "" if result.score_change is None else result.score_change,
                ]
                + [points.get(c, 0) for c in components]
                + [
                    "; ".join(s.description for s in result.score.signals),
                    result.lead_channel or "",
                    result.motion or "",
                    "; ".join(result.buyers),
                    int(result.score.metrics.get("active_users_28d", 0)),
                    result.account.first_seen.isoformat() if result.account.first_seen else "",
                    result.score.guard or "",
                    ids.get("salesforce", ""),
                    ids.get("hubspot", ""),
                ]
            )
    console.print(f"Wrote {len(scored.results)} accounts to {file}")


def _explain_destination(
    name: str, destination: CrmDestination, mapping: DestinationMapping, result: AccountResult
) -> None:
    """Print the account's match in one CRM and the fields a run would write there."""
    from pls_sync.planning import desired_fields, diff_record
    from pls_sync.service import match_destination

    outcome = match_destination(destination, mapping, [result])
    assert outcome.report is not None
    match = outcome.report.matches.get(result.account.key)
    if match is None or match.record_id is None:
        status = match.status if match else "unmatched"
        candidates = ", ".join(match.candidates) if match and match.candidates else "none"
        console.print(f"{name}: {status}; candidates: {candidates}", highlight=False)
        return
    specs = destination.describe(mapping.object)
    record = outcome.records[match.record_id]
    by_target = {f.target: f for f in mapping.fields}
    pending = diff_record(record, desired_fields(result, mapping, specs), specs, by_target)
    console.print(
        f"{name}: {match.status} -> {match.record_id} ({record.name}); "
        f"fields to write: {pending or 'none'}",
        highlight=False,
    )


@app.command()
def explain(
    domain: Annotated[str, typer.Argument(help="Account domain (or workspace:<id>).")],
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
) -> None:
    """Show one account's score breakdown, signals, matched CRM records and pending field changes."""
    from pls_sync.bootstrap import build_adapters
    from pls_sync.domains import registrable_domain
    from pls_sync.service import analyse

    settings = load_or_exit(config)
    when = parse_as_of(as_of)
    wanted = domain if domain.startswith("workspace:") else (registrable_domain(domain) or domain)
    try:
        adapters = build_adapters(settings)
        scored, _leads = analyse(adapters, settings.scoring, settings.channels, when)
        result = scored.by_key().get(wanted)
        if result is None:
            err_console.print(f"No product account {wanted!r} as of {when.isoformat()}.")
            raise typer.Exit(EXIT_FAILED)
        s = result.score
        console.print(
            f"[bold]{result.account.domain}[/bold]: score {s.score}, tier {s.tier}"
            + (f" (held back by {s.guard})" if s.guard else "")
        )
        for c in s.components:
            console.print(f"  {c.name:<10} {c.points:5.1f} pts  ({c.description})", highlight=False)
        for sig in s.signals:
            console.print(f"  signal     +{sig.points:.0f}  {sig.description}", highlight=False)
        console.print(
            f"  qualified since: {result.state.qualified_since or '-'}; "
            f"change: {'-' if result.score_change is None else f'{result.score_change:+d}'}"
        )
        console.print(
            f"  lead channel: {result.lead_channel or '-'}; motion: {result.motion or '-'}",
            highlight=False,
        )
        for buyer in result.buyers:
            console.print(f"  likely buyer: {buyer}", highlight=False)
        if not result.buyers:
            console.print("  likely buyers: none found among the account's users", highlight=False)
        failed = False
        for name, destination in adapters.destinations.items():
            try:
                _explain_destination(name, destination, adapters.mappings[name], result)
            except PlsSyncError as exc:  # one CRM failing must not hide the other
                failed = True
                console.print(f"{name}: not checked ({redact(str(exc))})", highlight=False)
        for name, error in adapters.destination_errors.items():
            console.print(f"{name}: not checked ({error})", highlight=False)
    except PlsSyncError as exc:
        err_console.print(
            f"[bold red]Explain failed:[/bold red] {redact(str(exc))}", highlight=False
        )
        raise typer.Exit(EXIT_FAILED) from None
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def status(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    limit: Annotated[int, typer.Option(help="How many runs to list.")] = 5,
    max_age_hours: Annotated[
        float | None,
        typer.Option(help="Fail when the last run is older (default: from the schedule)."),
    ] = None,
) -> None:
    """Recent runs; exits 1 when the last run failed or is overdue (a container healthcheck)."""
    from pls_sync.bootstrap import open_existing_state_store
    from pls_sync.health import check_health

    settings = load_or_exit(config)
    try:
        store = open_existing_state_store(settings.state_url)
        report = check_health(
            store, settings, datetime.now(UTC), limit=limit, max_age_hours=max_age_hours
        )
    except PlsSyncError as exc:
        err_console.print(
            f"[bold red]State store unavailable:[/bold red] {redact(str(exc))}", highlight=False
        )
        raise typer.Exit(EXIT_FAILED) from None
    for line in report.lines:
        console.print(line, highlight=False, soft_wrap=True)
    if not report.healthy:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def demo(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    companies: Annotated[int, typer.Option(help="Demo companies to generate.")] = 400,
    users: Annotated[
        int | None, typer.Option(help="Users to generate (default: from companies).")
    ] = None,
    events: Annotated[
        int | None, typer.Option(help="Events to generate (default: ~50 per user).")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Regenerate the demo warehouse and state.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed of the demo data.")] = 7,
) -> None:
    """The whole product on one machine: demo warehouse, CRM sandbox, a sync and a rerun."""
    from pls_sync.demo import run_demo

    code = run_demo(
        console, config, companies=companies, users=users, events=events, fresh=fresh, seed=seed
    )
    raise typer.Exit(code)


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the CRM data.")] = 7,
) -> None:
    """Serve the local Salesforce + HubSpot stand-in in the foreground (Ctrl-C stops it)."""
    from pls_sync.sandbox.server import Sandbox

    box = Sandbox(port=port, seed=seed)
    console.print(
        f"CRM sandbox on http://127.0.0.1:{port}\n"
        f"  SALESFORCE_INSTANCE_URL=http://127.0.0.1:{port}\n"
        f"  SALESFORCE_SESSION_ID={box.session_id}\n"
        f"  HUBSPOT_BASE_URL=http://127.0.0.1:{port}\n"
        f"  HUBSPOT_ACCESS_TOKEN={box.hubspot_token}\n"
        f"  request counts: GET http://127.0.0.1:{port}/__sandbox/counts",
        highlight=False,
        soft_wrap=True,  # the session id must stay on one line to be copied
    )
    with contextlib.suppress(KeyboardInterrupt):
        box.serve_forever()


@app.command()
def schedule(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    run_now: Annotated[
        bool, typer.Option("--run-now", help="Run every job once at start.")
    ] = False,
) -> None:
    """The long-running cron process: runs the configured jobs until SIGTERM or SIGINT."""
    from pls_sync.bootstrap import build_adapters, build_state_store
    from pls_sync.errors import RunLockedError
    from pls_sync.scheduler import LockedOut, SyncScheduler, now_utc
    from pls_sync.service import RunOptions, run_sync

    settings = load_or_exit(config)
    try:
        store = build_state_store(settings)
    except PlsSyncError as exc:
        err_console.print(
            f"[bold red]State store unavailable:[/bold red] {redact(str(exc))}", highlight=False
        )
        raise typer.Exit(EXIT_FAILED) from None
    batch_sizes = {n: d.batch_size for n, d in settings.destinations.items()}

    def run_job(name: str, destinations: tuple[str, ...] | None) -> None:
        # Fresh adapters per run: new sessions, a re-read warehouse, nothing stale kept.
        adapters = build_adapters(settings, only=destinations)
        options = RunOptions(
            as_of=now_utc(),
            command=f"schedule:{name}",
            plans_dir=settings.plans_dir,
            destinations=destinations,
            api_budget_share=settings.api_budget_share,
            history_days=settings.history_days,
            stop=scheduler.stopping,
        )
        try:
            result = run_sync(
                adapters,
                settings.scoring,
                options,
                batch_sizes=batch_sizes,
                channels=settings.channels,
            )
        except RunLockedError as exc:
            raise LockedOut(str(exc)) from None
        log.info("scheduled_run_summary", job=name, status=result.status, summary=result.summary)
        if result.status == "failed":
            raise PlsSyncError(f"run {options.run_id} failed")

    def heartbeat(detail: dict[str, Any]) -> None:
        store.heartbeat("scheduler", now_utc(), detail)

    scheduler = SyncScheduler(settings, run_job, heartbeat=heartbeat)
    raise typer.Exit(scheduler.run_forever(run_now=run_now))


def version_callback(value: bool) -> None:
    """Print the version and exit."""
    if value:
        console.print(f"pls-sync {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """pls-sync: product-qualified accounts in your CRM."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
