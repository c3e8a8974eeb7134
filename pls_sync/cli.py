"""The ``pls-sync`` command line. Exit codes: 0 done, 1 run failed, 2 bad config or usage.

Every failure a user can cause ends in one line on stderr and exit 1 or 2, never a traceback.
``--format json|csv`` puts data alone on stdout (messages and logs go to stderr).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from pls_sync import __version__
from pls_sync.errors import ConfigError, PlsSyncError, redact
from pls_sync.list_view import LIST_COLUMNS, ListName, list_lines, ranked_rows
from pls_sync.output import (
    OutputFormat,
    iso,
    write_json,
    write_rows,
)

if TYPE_CHECKING:
    from pls_sync.config import Settings
    from pls_sync.planning import AccountResult, Plan
    from pls_sync.ports import RunRecord
    from pls_sync.service import RunResult
    from pls_sync.setup_service import DestinationSetup

app = typer.Typer(
    name="pls-sync",
    help="Score product accounts as PQAs from warehouse usage and sync them into Salesforce and HubSpot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# Where `pls-sync calibrate` keeps its last result in the state store, for the report.
CALIBRATION_KEY = "calibration"
TABLE, JSON, CSV = OutputFormat.TABLE, OutputFormat.JSON, OutputFormat.CSV

PLAN_COLUMNS = ("destination", "object", "record_id", "account", "field", "from", "to", "reason")
RUN_COLUMNS = ("started_at", "command", "status", "duration", "written", "rejected", "error")
EXPORT_SUFFIXES = {".csv": ",", ".tsv": "\t"}
NO_MQLS_NOTE = (
    "MQLs not read without a CRM (--with-crm): lead_channel usage_no_buyer means no buyer "
    "among the users; an MQL may exist"
)


def _use_sandbox(ctx: typer.Context, value: bool) -> bool:
    """``--sandbox``: the settings ``pls-sync sandbox`` saved, in the environment for this command.

    They win over the environment and are taken back when the command ends. Checked before
    anything runs: no settings file, or no sandbox answering at its URL, is one line and exit 1.
    """
    if not value or ctx.resilient_parsing:
        return value
    from pls_sync.demo import SANDBOX_ENV, read_sandbox_env, sandbox_answers

    hint = "start it with `pls-sync sandbox` in another terminal"
    try:
        values = read_sandbox_env(SANDBOX_ENV)
    except FileNotFoundError:
        fail(f"no CRM sandbox settings at {SANDBOX_ENV}: {hint}")
    except (OSError, ValueError) as exc:
        fail(f"cannot read the CRM sandbox settings {SANDBOX_ENV}: {exc}")
    url = values.get("SALESFORCE_INSTANCE_URL", "")
    if not sandbox_answers(url):
        fail(f"no CRM sandbox answers at {url or '(no URL)'}: {hint}")
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    ctx.call_on_close(lambda: _restore_env(saved))
    return value


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for name, old in saved.items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


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
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="table for people; json or csv alone on stdout, for scripts and spreadsheets.",
        case_sensitive=False,
    ),
]
SandboxOption = Annotated[
    bool,
    typer.Option(
        "--sandbox",
        help="Use the CRM sandbox `pls-sync sandbox` serves (its settings in "
        ".pls-sync/sandbox.env win over the environment); reads every CRM record.",
        callback=_use_sandbox,
    ),
]


def fail(message: str, code: int = EXIT_FAILED, label: str | None = None) -> NoReturn:
    """Print ``message`` as one line on stderr (after a bold red ``label``) and exit ``code``."""
    prefix = f"[bold red]{label}:[/bold red] " if label else ""
    err_console.print(prefix + escape(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def os_error_text(exc: OSError) -> str:
    """``Permission denied: /path`` rather than ``[Errno 13] Permission denied: '/path'``."""
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.filename else reason


def note(message: str) -> None:
    """One line for the user on stderr (stdout may carry data)."""
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


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


def load_or_exit(config: Path, *, data_on_stdout: bool = False) -> Settings:
    """Load settings, or print every config issue and exit 2 before anything runs.

    With ``data_on_stdout`` (json/csv output) logs go to stderr whatever
    ``PLS_SYNC_LOG_STREAM`` says, so stdout carries the data alone.
    """
    # The config (pydantic) and logging (structlog) load here, not at start-up: `--help` and
    # usage errors answer without them.
    from pls_sync.config import load_settings
    from pls_sync.logs import configure_logging

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err_console.print(f"[bold red]Configuration error[/bold red] ({len(exc.issues)} issue(s)):")
        for issue in exc.issues:
            err_console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    stream = sys.stderr if data_on_stdout else None
    configure_logging(settings.logging.level, settings.logging.format, stream=stream)
    return settings


def check_destinations(settings: Settings, destination: list[str] | None) -> tuple[str, ...] | None:
    """``--destination`` values, all configured; an unknown one is a usage error (exit 2)."""
    only = tuple(destination) if destination else None
    unknown = sorted(set(only or ()) - set(settings.destinations))
    if unknown:
        raise typer.BadParameter(
            f"unknown destination(s) {', '.join(unknown)}; configured: "
            + ", ".join(sorted(settings.destinations)),
            param_hint="--destination",
        )
    return only


def write_summary_json(path: Path | None, summary: dict[str, Any]) -> None:
    """Write the summary to ``path`` when asked; an unwritable path is one line and exit 1."""
    if path is not None:
        write_output_file(path, lambda out: write_json(summary, out))


# --------------------------------------------------------------------------- output files


def output_target(path: Path, suffixes: Iterable[str], refusal: str) -> Path | None:
    """Check an output path before any work: ``-`` is stdout (None); a directory or a name
    without one of ``suffixes`` is a usage error (exit 2, ``refusal`` says what to do); a path
    under a file cannot be written (exit 1)."""
    if str(path) == "-":
        return None
    if path.is_dir():
        fail(f"{path} is a directory: {refusal}", EXIT_CONFIG)
    if path.suffix.lower() not in suffixes:
        fail(refusal, EXIT_CONFIG)
    check_writable(path)
    return path


def file_in_the_way(path: Path) -> Path | None:
    """The existing file (not folder) among ``path``'s parents, which no write can get past."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def check_writable(path: Path | None) -> None:
    """Before a run, refuse an output path that cannot be written: a folder (exit 2) or a
    path under a file (exit 1); permissions are found out when writing."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{path} is a directory: name a file", EXIT_CONFIG)
    blocker = file_in_the_way(path)
    if blocker is not None:
        fail(f"cannot write {path}: {blocker} is a file, not a folder")


def write_output_file(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write ``path`` through ``write(handle)``, whole or not at all (``replacing``).

    An OS failure (no permission, a file where a folder should be, a full disk) is one line
    and exit 1.
    """
    from pls_sync.files import replacing

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, newline="") as handle:
            write(handle)
    except OSError as exc:
        blocker = file_in_the_way(path)
        reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
        fail(f"cannot write {path}: {reason}")


def write_output(path: Path | None, write: Callable[[TextIO], object]) -> None:
    """Write to ``path``, or to stdout when it is None."""
    if path is None:
        write(sys.stdout)
        sys.stdout.flush()
    else:
        write_output_file(path, write)


# --------------------------------------------------------------------------- run, plan


def _sync(
    config: Path,
    as_of: str | None,
    summary_json: Path | None,
    destination: list[str] | None,
    *,
    dry_run: bool,
    full_refresh: bool = False,
    fmt: OutputFormat = TABLE,
    limit: int = 15,
) -> None:
    from pls_sync.bootstrap import build_adapters
    from pls_sync.service import RunOptions, run_sync

    settings = load_or_exit(config, data_on_stdout=fmt is not TABLE)
    when = parse_as_of(as_of)
    only = check_destinations(settings, destination)
    check_writable(summary_json)
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
        fail(redact(str(exc)), label="Run failed")
    except OSError as exc:  # the plans folder, for one, may not be writable
        fail(redact(os_error_text(exc)), label="Run failed")
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if fmt is TABLE:
        _render_run(result, dry_run=dry_run, limit=limit)
    else:
        write_plan_output(result, fmt, sys.stdout)
    write_summary_json(summary_json, result.summary)
    if not dry_run:
        report_after_run(settings)
    invalid = [n for n, o in result.outcomes.items() if o.status == "invalid"]
    if invalid:
        # A mapping that does not fit its CRM is a configuration problem, like a bad key.
        err_console.print(
            f"Not written to {', '.join(invalid)}: the mapping does not fit the live schema "
            "(see above); fix it, check with `pls-sync validate`, then run again.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_CONFIG)
    if result.status not in ("succeeded", "stopped"):
        raise typer.Exit(EXIT_FAILED)


def report_after_run(settings: Settings) -> None:
    """The report page after a run, when ``report.after_run`` asks; a failure is one line."""
    from pls_sync.report_data import write_report_after_run

    try:
        written = write_report_after_run(settings, now=datetime.now(UTC))
    except (PlsSyncError, OSError) as exc:
        text = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
        note(f"report not written: {redact(text)}")
        return
    if written:
        note(written)


def _render_run(result: RunResult, *, dry_run: bool, limit: int) -> None:
    from pls_sync.report import render_plan, render_summary

    render_summary(console, result.summary)
    if dry_run:
        for outcome in result.outcomes.values():
            if outcome.plan is not None and outcome.plan.changes:
                render_plan(console, outcome.plan, limit=limit)


def _plans(result: RunResult) -> list[Plan]:
    return [o.plan for o in result.outcomes.values() if o.plan is not None]


def write_plan_output(result: RunResult, fmt: OutputFormat, out: TextIO) -> None:
    """A plan for scripts: CSV has one row per field change (``PLAN_COLUMNS``); JSON is one
    object ``{"summary": <the run summary>, "changes": [<the same rows>]}``."""
    import json

    from pls_sync.output import plain
    from pls_sync.planning import plan_rows

    rows = (row for plan in _plans(result) for row in plan_rows(plan))
    if fmt is CSV:
        write_rows(rows, PLAN_COLUMNS, CSV, out)
        return
    summary = json.dumps(plain(result.summary), indent=2, ensure_ascii=False)
    out.write('{\n"summary": ' + summary + ',\n"changes": ')
    write_rows(rows, PLAN_COLUMNS, JSON, out)
    out.write("}\n")


@app.command()
def run(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    summary_json: SummaryOption = None,
    destination: DestinationOption = None,
    full_refresh: FullRefreshOption = False,
    sandbox: SandboxOption = False,
) -> None:
    """Run one sync now: read, score, match and write the changed fields."""
    _sync(
        config,
        as_of,
        summary_json,
        destination,
        dry_run=False,
        full_refresh=full_refresh or sandbox,
    )


@app.command()
def plan(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    summary_json: SummaryOption = None,
    destination: DestinationOption = None,
    full_refresh: FullRefreshOption = False,
    fmt: FormatOption = TABLE,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Records listed per destination (0: all).")
    ] = 15,
    sandbox: SandboxOption = False,
) -> None:
    """The same as run without writing: print the field diff and save it to the plans folder."""
    _sync(
        config,
        as_of,
        summary_json,
        destination,
        dry_run=True,
        full_refresh=full_refresh or sandbox,
        fmt=fmt,
        limit=limit,
    )


@app.command()
def validate(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    sandbox: SandboxOption = False,
    as_of: AsOfOption = None,
) -> None:
    """Check config and mappings, then the schedule, the warehouse, the event taxonomy and each
    CRM's live schema (when credentials are present). Exit 2 when something does not fit."""
    from pls_sync.validation import print_report, validate_settings

    settings = load_or_exit(config)
    console.print(f"Config files OK: {config}", highlight=False)
    when = parse_as_of(as_of) if as_of else None
    report = validate_settings(settings, datetime.now(UTC), as_of=when)
    print_report(console, report)
    raise typer.Exit(report.exit_code)


# --------------------------------------------------------------------------- setup

# A column before each plan line: fine, to be created, to be changed, for a person to fix.
SETUP_MARKS = {
    "ok": "ok",
    "create": "+",
    "add_values": "~",
    "make_external_id": "~",
    "conflict": "!",
}


@app.command()
def setup(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    destination: Annotated[
        list[str] | None,
        typer.Option("--destination", "-d", help="Only this CRM (repeatable)."),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Make the changes (default: print the plan).")
    ] = False,
    assign: Annotated[
        bool,
        typer.Option(
            "--assign",
            help="Salesforce: assign the PLS_Sync_Integration permission set to the running user.",
        ),
    ] = False,
    sandbox: SandboxOption = False,
) -> None:
    """Create the CRM fields the mappings need (types, picklist values, the alert key), from
    the mappings themselves: a plan first, changes only with --apply, never a deletion or a type
    change. Exit 1 when a CRM could not be read or refused a change (what was done before it is
    listed); with --apply, 2 when a conflict is left to fix by hand."""
    from pls_sync.bootstrap import build_schema_admin, enabled_destinations
    from pls_sync.setup_service import setup_destination

    settings = load_or_exit(config)
    unknown = sorted(set(destination or ()) - set(settings.destinations))
    if unknown:
        configured = ", ".join(settings.destinations)
        fail(f"unknown destination {', '.join(unknown)}; configured: {configured}", EXIT_CONFIG)
    names = enabled_destinations(settings, tuple(destination) if destination else None)
    if not names:
        fail(
            "no enabled destination to set up: enable it under destinations in the config "
            "(e.g. PLS_SYNC_HUBSPOT_ENABLED=true)",
            EXIT_CONFIG,
        )
    worst = EXIT_OK
    for name in names:
        try:
            admin = build_schema_admin(name, settings)
            result = setup_destination(name, settings, admin, apply=apply, assign=assign)
        except PlsSyncError as exc:
            err_console.print(f"{name}: {escape(redact(str(exc)))}", highlight=False)
            worst = EXIT_FAILED
            continue
        print_setup(name, result, apply)
        if result.error:
            worst = EXIT_FAILED
        elif result.conflicts and apply and worst == EXIT_OK:
            worst = EXIT_CONFIG  # applied all it could; the rest needs a person
    raise typer.Exit(worst)


def print_setup(name: str, result: DestinationSetup, applied: bool) -> None:
    """A destination's plan, then (after --apply) what was done and what stopped it."""
    console.print(f"[bold]{name}[/bold]", highlight=False)
    for step in result.steps:
        mark = SETUP_MARKS.get(step.action, step.action)
        console.print(f"  {mark:<3} {escape(step.detail)}", highlight=False, soft_wrap=True)
    if not applied:
        pending = len(result.pending)
        if pending:
            console.print(
                f"  {pending} change(s) to make: run `pls-sync setup --apply`", highlight=False
            )
        else:
            console.print("  nothing to change", highlight=False)
        return
    for line in result.done:
        console.print(f"  done {escape(line)}", highlight=False, soft_wrap=True)
    if not result.done and not result.error:
        console.print("  nothing to change: every field is already as pls-sync needs it")
    if result.error:
        err_console.print(
            f"{name}: stopped: {escape(result.error)}"
            + (
                f" ({len(result.done)} change(s) made before it, listed above)"
                if result.done
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )


# --------------------------------------------------------------------------- export


EXPORT_REFUSAL = "export writes CSV; name the file .csv (Excel opens it)"


def export_columns(settings: Settings) -> list[str]:
    """The export's header: the account, its score and points per component, channel, ids."""
    components = [f"{c.name}_points" for c in settings.scoring.components]
    return [
        "account",
        "domain",
        "score",
        "tier",
        "qualified_since",
        "score_change",
        *components,
        "signals",
        "lead_channel",
        "mqls_checked",
        "motion",
        "fit_segment",
        "employees",
        "buyers",
        "active_users_28d",
        "first_seen",
        "age_guard",
        "salesforce_id",
        "hubspot_id",
    ]


def _whole(value: float | None) -> int | None:
    """A count as an int; None stays None (a custom model's NULL: unknown, not 0)."""
    return None if value is None else int(value)


def export_row(result: AccountResult, ids: Mapping[str, str], mqls_checked: bool) -> dict[str, Any]:
    """One account as an export row (keys of ``export_columns``)."""
    score = result.score
    row: dict[str, Any] = {
        "account": result.account.key,
        "domain": result.account.domain,
        "score": score.score,
        "tier": score.tier,
        "qualified_since": result.state.qualified_since,
        "score_change": result.score_change,
        "signals": [s.description for s in score.signals],
        "lead_channel": result.lead_channel,
        "mqls_checked": mqls_checked,
        "motion": result.motion,
        "fit_segment": result.fit.segment if result.fit else None,
        "employees": _whole(result.fit.employees) if result.fit else None,
        "buyers": list(result.buyers),
        "active_users_28d": _whole(score.metrics.get("active_users_28d", 0)),
        "first_seen": result.account.first_seen,
        "age_guard": score.guard,
        "salesforce_id": ids.get("salesforce"),
        "hubspot_id": ids.get("hubspot"),
    }
    for component in score.components:
        row[f"{component.name}_points"] = round(component.points, 1)
    return row


def _score_for_export(
    settings: Settings, when: datetime, *, with_crm: bool, full_refresh: bool
) -> tuple[list[AccountResult], dict[str, dict[str, str]], bool]:
    """Scored accounts ranked by score, their matched record ids by account and destination,
    and whether every CRM's MQLs were read (without them a lead channel cannot say MQL)."""
    from pls_sync.bootstrap import build_adapters
    from pls_sync.service import analyse, match_as_a_run_does

    matched: dict[str, dict[str, str]] = {}
    try:
        adapters = build_adapters(settings, with_destinations=with_crm, full_refresh=full_refresh)
        scored, leads = analyse(adapters, settings.scoring, settings.channels, when)
        for name, error in adapters.destination_errors.items():
            note(f"{name}: not matched ({redact(error)})")
        if with_crm and adapters.destination_errors and not adapters.destinations:
            raise PlsSyncError("no CRM could be reached for --with-crm")
        for name, destination in adapters.destinations.items():
            outcome = match_as_a_run_does(
                destination, adapters.mappings[name], scored.results, adapters.state
            )
            assert outcome.report is not None
            for key, match in outcome.report.matches.items():
                if match.record_id:
                    matched.setdefault(key, {})[name] = match.record_id
    except PlsSyncError as exc:
        fail(redact(str(exc)), label="Export failed")
    errors = leads.errors if leads is not None else {}
    for name, error in errors.items():
        note(f"{name}: MQLs not read ({redact(error)}): lead channels may miss MQLs")
    mqls_checked = with_crm and bool(adapters.mql_sources) and not errors
    ranked = sorted(scored.results, key=lambda r: (-r.score.score, r.account.key))
    return ranked, matched, mqls_checked


@app.command()
def export(
    file: Annotated[
        Path,
        typer.Argument(help="CSV file to write (.csv; .tsv for tabs); - writes to stdout."),
    ],
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    with_crm: Annotated[
        bool,
        typer.Option("--with-crm/--no-crm", help="Also match CRM records and read MQLs."),
    ] = False,
    sandbox: SandboxOption = False,
) -> None:
    """Write every scored account to a spreadsheet: no CRM needed (--sandbox implies --with-crm)."""
    target = output_target(file, EXPORT_SUFFIXES, EXPORT_REFUSAL)
    settings = load_or_exit(config, data_on_stdout=target is None)
    when = parse_as_of(as_of)
    ranked, matched, mqls_checked = _score_for_export(
        settings, when, with_crm=with_crm or sandbox, full_refresh=sandbox
    )
    columns = export_columns(settings)
    rows = (export_row(r, matched.get(r.account.key, {}), mqls_checked) for r in ranked)
    delimiter = EXPORT_SUFFIXES.get(file.suffix.lower(), ",")
    write_output(target, lambda out: write_rows(rows, columns, CSV, out, delimiter=delimiter))
    if not (with_crm or sandbox):
        note(NO_MQLS_NOTE)
    if target is None:
        note(f"Wrote {len(ranked)} accounts to stdout")
    else:
        console.print(f"Wrote {len(ranked)} accounts to {file}", markup=False, highlight=False)


# --------------------------------------------------------------------------- explain


@app.command()
def explain(
    domain: Annotated[str, typer.Argument(help="Account domain (or workspace:<id>).")],
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    fmt: FormatOption = TABLE,
    sandbox: SandboxOption = False,
) -> None:
    """Show one account's score breakdown, signals, matched CRM records and pending field changes."""
    from pls_sync.bootstrap import build_adapters
    from pls_sync.domains import registrable_domain
    from pls_sync.explanation import (
        account_breakdown,
        destination_breakdown,
        explain_csv_row,
        explain_lines,
    )
    from pls_sync.service import analyse

    settings = load_or_exit(config, data_on_stdout=fmt is not TABLE)
    when = parse_as_of(as_of)
    wanted = domain if domain.startswith("workspace:") else (registrable_domain(domain) or domain)
    try:
        adapters = build_adapters(settings, full_refresh=sandbox)
        scored, _leads = analyse(adapters, settings.scoring, settings.channels, when)
        result = scored.by_key().get(wanted)
        if result is None:
            fail(f"No product account {wanted!r} as of {iso(when)}.")
        data = account_breakdown(result, when)
        destinations: dict[str, Any] = {
            name: destination_breakdown(
                destination, adapters.mappings[name], result, adapters.state
            )
            for name, destination in adapters.destinations.items()
        }
        for name, error in adapters.destination_errors.items():
            destinations[name] = {"status": "not_configured", "error": redact(error)}
        data["destinations"] = destinations
    except PlsSyncError as exc:
        fail(redact(str(exc)), label="Explain failed")
    if fmt is TABLE:
        for line in explain_lines(data):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    elif fmt is JSON:
        write_json(data, sys.stdout)
    else:
        row = explain_csv_row(data)
        write_rows([row], list(row), CSV, sys.stdout)
    if any(dest.get("status") == "failed" for dest in destinations.values()):
        raise typer.Exit(EXIT_FAILED)


# --------------------------------------------------------------------------- status


def run_row(run: RunRecord) -> dict[str, Any]:
    """A recorded run as a status row (``RUN_COLUMNS``); duration in seconds."""
    destinations = run.summary.get("destinations", {}) or {}
    duration = (
        round((run.finished_at - run.started_at).total_seconds(), 1) if run.finished_at else None
    )
    return {
        "started_at": run.started_at,
        "command": run.command,
        "status": run.status,
        "duration": duration,
        "written": sum(int((d or {}).get("records_written", 0)) for d in destinations.values()),
        "rejected": sum(int((d or {}).get("rejected", 0)) for d in destinations.values()),
        "error": run.error,
    }


@app.command()
def status(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    limit: Annotated[
        int,
        typer.Option(min=0, help="How many runs to list (0: none; the last run is still judged)."),
    ] = 5,
    max_age_hours: Annotated[
        float | None,
        typer.Option(help="Fail when the last run is older (default: from the schedule)."),
    ] = None,
    fmt: FormatOption = TABLE,
    sandbox: SandboxOption = False,
) -> None:
    """Recent runs; exits 1 when the last run failed or is overdue (a container healthcheck).

    json: ``{"healthy", "verdict", "messages", "runs": [...]}``; csv: the runs, the verdict on
    stderr and in the exit code.
    """
    from pls_sync.bootstrap import open_existing_state_store
    from pls_sync.health import check_health

    settings = load_or_exit(config, data_on_stdout=fmt is not TABLE)
    try:
        store = open_existing_state_store(settings.state_url)
        report = check_health(
            store,
            settings,
            datetime.now(UTC),
            limit=limit if fmt is TABLE else 0,
            max_age_hours=max_age_hours,
        )
        runs = store.recent_runs(limit) if fmt is not TABLE and limit else []
    except PlsSyncError as exc:
        fail(redact(str(exc)), label="State store unavailable")
    if fmt is TABLE:
        for line in report.lines:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    elif fmt is JSON:
        verdict = "healthy" if report.healthy else "unhealthy"
        document = {
            "healthy": report.healthy,
            "verdict": verdict,
            "messages": report.lines,
            "runs": [run_row(r) for r in runs],
        }
        write_json(document, sys.stdout)
    else:
        write_rows((run_row(r) for r in runs), RUN_COLUMNS, CSV, sys.stdout)
        for line in report.lines:
            note(line)
    if not report.healthy:
        raise typer.Exit(EXIT_FAILED)


# --------------------------------------------------------------------------- lists


LIST_SUFFIXES = {".csv": CSV, ".json": JSON}
LIST_REFUSAL = "lists writes CSV or JSON; name the file .csv or .json"


def list_format(fmt: OutputFormat, output: Path | None) -> OutputFormat:
    """The format of ``lists``: ``--format``, or the ``--output`` file's suffix; a mismatch
    between the two is a usage error."""
    if output is None or str(output) == "-":
        return fmt
    by_suffix = LIST_SUFFIXES.get(output.suffix.lower())
    if by_suffix is not None and fmt is not TABLE and fmt is not by_suffix:
        raise typer.BadParameter(
            f"--format {fmt} does not match the file name {output}", param_hint="--output"
        )
    return by_suffix or fmt


def load_saved_lists(settings: Settings) -> tuple[str, datetime, dict[str, list[dict[str, Any]]]]:
    """The last run's lists from the state store (never created here); exit 1 when none."""
    from pls_sync.bootstrap import STATE_MISSING, open_existing_state_store
    from pls_sync.errors import FatalError

    first = "no run recorded yet: run `pls-sync run` first"
    try:
        store = open_existing_state_store(settings.state_url)
        saved = store.load_lists()
    except PlsSyncError as exc:
        message = redact(str(exc))
        if isinstance(exc, FatalError) and exc.code == STATE_MISSING:  # nothing ran here yet
            fail(f"{first} ({message})")
        fail(message, label="State store unavailable")
    if saved is None:
        fail(first)
    return saved


@app.command()
def calibrate(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    as_of: AsOfOption = None,
    horizon_days: Annotated[
        int, typer.Option(min=1, help="Days after the backtest date a conversion counts.")
    ] = 60,
    seed: Annotated[int, typer.Option(help="Seed of the folds and the bootstrap.")] = 0,
    json_output: Annotated[
        Path | None, typer.Option("--json", help="Also write the result as JSON here.")
    ] = None,
    propose_path: Annotated[
        Path | None,
        typer.Option(
            "--propose",
            help="Write a scoring file fitted to the labels here (weights, signal points, "
            "curves, tier bounds), to diff against the one in use.",
        ),
    ] = None,
    target_precision: Annotated[
        float | None,
        typer.Option(
            help="With --propose: the sales tier starts where its accounts convert at this "
            "rate (0..1)."
        ),
    ] = None,
    capacity: Annotated[
        int | None,
        typer.Option(help="With --propose: at most this many accounts in the sales tier."),
    ] = None,
) -> None:
    """Backtest the score against conversions (`labels:`): score every account as of
    --as-of minus the horizon, label it by whether it converted by --as-of, and report AUC,
    lift by decile, the sales tier's precision and recall, each signal's conversion rate, and
    cross-validated logistic regressions on the same inputs (needs `pls-sync[calibrate]`).
    With --propose, also write a scoring file fitted to the labels, its tier bounds chosen for
    --target-precision or --capacity. The result is kept for `pls-sync report`."""
    from pls_sync.bootstrap import build_state_store
    from pls_sync.calibrate_service import backtest, proposal_file, propose
    from pls_sync.calibration import render_text
    from pls_sync.model_proposal import check_options

    if target_precision is not None and capacity is not None:
        fail("--target-precision and --capacity exclude each other: give one", EXIT_CONFIG)
    if (target_precision is not None or capacity is not None) and propose_path is None:
        fail(
            "--target-precision and --capacity set the proposed tiers: add --propose PATH",
            EXIT_CONFIG,
        )
    try:
        check_options(target_precision, capacity)
    except PlsSyncError as exc:
        fail(str(exc), EXIT_CONFIG)
    settings = load_or_exit(config)
    scoring_path = settings.scoring_path
    if (
        propose_path is not None
        and scoring_path is not None
        and propose_path.resolve() == scoring_path.resolve()
    ):
        fail(
            f"--propose {propose_path} is the scoring file the config uses: write the proposal "
            "elsewhere, diff it and copy it over yourself",
            EXIT_CONFIG,
        )
    when = parse_as_of(as_of)
    try:
        if propose_path is None:
            result = backtest(settings, as_of=when, horizon_days=horizon_days, seed=seed)
        else:
            result = propose(
                settings,
                as_of=when,
                horizon_days=horizon_days,
                seed=seed,
                target_precision=target_precision,
                capacity=capacity,
            )
    except PlsSyncError as exc:
        fail(redact(str(exc)), label="Calibration failed")
    for line in render_text(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    data = result.as_dict()
    try:
        store = build_state_store(settings)
        try:
            store.set_value(CALIBRATION_KEY, data)
        finally:
            store.close()
    except PlsSyncError as exc:
        note(f"not kept for `pls-sync report`: {redact(str(exc))}")
    try:
        if json_output is not None:
            json_output.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(data, indent=2, default=str)
            json_output.write_text(text, encoding="utf-8")
        if propose_path is not None:
            scoring = proposal_file(settings, result, generated_at=datetime.now(UTC))
            propose_path.parent.mkdir(parents=True, exist_ok=True)
            propose_path.write_text(scoring, encoding="utf-8")
    except OSError as exc:
        fail(redact(os_error_text(exc)), label="Calibration failed")
    if propose_path is not None:
        console.print(
            f"Proposed scoring file written to {propose_path}: diff it with "
            f"`diff -u {scoring_path} {propose_path}`",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def demo_as_of(warehouse: Path) -> datetime | None:
    """The day the demo warehouse's story is told as of, when there is one: the sandbox's
    deals and opportunities follow it."""
    if not warehouse.is_file():
        return None
    from connectors.demo_warehouse import read_demo_as_of

    try:
        return read_demo_as_of(warehouse)
    except PlsSyncError:  # a damaged demo file only loses the alignment
        return None


REPORT_REFUSAL = "report writes one HTML page; name the file .html"


@app.command()
def report(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The page to write (.html).")
    ] = Path(".pls-sync/report.html"),
    config: ConfigOption = Path("config/pls_sync.yaml"),
    sandbox: SandboxOption = False,
) -> None:
    """One self-contained HTML page (opens offline) with charts of the last runs: score
    distribution, tier flow, match rate per CRM, channels and motions, the ABM and unmatched
    lists, and the calibration when `pls-sync calibrate` has run."""
    from pls_sync.bootstrap import STATE_MISSING, open_existing_state_store
    from pls_sync.errors import FatalError
    from pls_sync.report_data import build_report

    if output.suffix.lower() not in (".html", ".htm"):
        fail(REPORT_REFUSAL, EXIT_CONFIG)
    settings = load_or_exit(config)
    try:
        store = open_existing_state_store(settings.state_url)
        calibration = store.get_value(CALIBRATION_KEY)
        page = build_report(settings, store, now=datetime.now(UTC), calibration=calibration)
    except PlsSyncError as exc:
        message = redact(str(exc))
        if isinstance(exc, FatalError) and exc.code == STATE_MISSING:
            fail(f"no run recorded yet: run `pls-sync run` first ({message})")
        fail(message, label="Report failed")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(redact(os_error_text(exc)), label="Report failed")
    console.print(
        f"Report written to {output} ({len(page.encode('utf-8')):,} bytes)", highlight=False
    )


@app.command("lists")
def lists_command(
    which: Annotated[
        ListName,
        typer.Argument(
            help="abm: accounts with usage and no buyer; unmatched: accounts with no CRM record; "
            "stale: PQAs nobody touched in the CRM.",
            case_sensitive=False,
        ),
    ],
    config: ConfigOption = Path("config/pls_sync.yaml"),
    fmt: FormatOption = TABLE,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write a .csv or .json file instead of stdout."),
    ] = None,
    destination: DestinationOption = None,
    sandbox: SandboxOption = False,
) -> None:
    """The whole ABM, unmatched or stale list of the last run, highest score first."""
    fmt = list_format(fmt, output)
    target = output_target(output, LIST_SUFFIXES, LIST_REFUSAL) if output is not None else None
    settings = load_or_exit(config, data_on_stdout=fmt is not TABLE and target is None)
    only = check_destinations(settings, destination)
    if only and which is ListName.ABM:
        raise typer.BadParameter("the abm list is not per destination", param_hint="--destination")
    run_id, at, saved = load_saved_lists(settings)
    if which.value not in saved:
        fail(f"the last run ({run_id} at {iso(at)}) kept no {which.value} list")
    rows = ranked_rows(saved[which.value], only)
    columns = LIST_COLUMNS[which]
    scope = f" for {', '.join(only)}" if only else ""
    about = f"{which.value} list{scope} of run {run_id} at {iso(at)}: {len(rows)} rows"
    if fmt is TABLE and target is None:
        sys.stdout.write("\n".join(list_lines(about, rows, columns)) + "\n")
        return
    if fmt is TABLE:
        fmt = CSV
    if target is None:
        note(about)
    if fmt is JSON:
        document = {"list": which.value, "run_id": run_id, "saved_at": at, "rows": rows}
        write_output(target, lambda out: write_json(document, out))
    else:
        write_output(target, lambda out: write_rows(rows, columns, CSV, out))
    if target is not None:
        console.print(f"Wrote the {about} to {target}", markup=False, highlight=False)


# --------------------------------------------------------------------------- demo, sandbox


@app.command()
def demo(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    companies: Annotated[int, typer.Option(min=0, help="Demo companies to generate.")] = 400,
    users: Annotated[
        int | None, typer.Option(min=0, help="Users to generate (default: from companies).")
    ] = None,
    events: Annotated[
        int | None, typer.Option(min=0, help="Events to generate (default: ~50 per user).")
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
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")
    ] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the CRM data.")] = 7,
    companies: Annotated[
        int, typer.Option(min=0, help="Demo companies in the CRM (as `pls-sync demo`).")
    ] = 400,
    search_lag: Annotated[
        float,
        typer.Option(min=0, help="Seconds before HubSpot's search sees a write (0: at once)."),
    ] = 3.0,
    search_per_second: Annotated[
        int, typer.Option(min=0, help="HubSpot searches allowed per second (0: no limit).")
    ] = 5,
    bulk_polls: Annotated[
        int,
        typer.Option(min=0, help="Polls a Salesforce Bulk API 2.0 job answers InProgress."),
    ] = 2,
    bare: Annotated[
        bool,
        typer.Option("--bare", help="A CRM without pls-sync's fields (try `pls-sync setup`)."),
    ] = False,
) -> None:
    """Serve the local Salesforce + HubSpot stand-in in the foreground (Ctrl-C stops it).

    It behaves like the real services where pls-sync relies on them: HubSpot's search sees
    writes only after a lag, has its own limit of 5 requests a second (answers without
    rate-limit headers, a 429 without Retry-After), 429s of the ten-second limit carry
    Retry-After only sometimes, unique-value properties refuse a taken value, idProperty works
    on single records; Salesforce answers its rate limit with a 403 REQUEST_LIMIT_EXCEEDED,
    upserts by External ID (201 created, 200 updated, 300 several), keeps Bulk API 2.0 jobs
    InProgress for some polls and returns their results in any order, refuses a malformed
    Collections request whole (400), lets API usage run past the allocation in
    Sforce-Limit-Info, and reports some row locks as CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY.
    Faults (POST /__sandbox/faults) include ones after the write is applied: the answer lost,
    cut mid-body, late, not JSON, or the write applied after the client's timeout.

    Its settings go to .pls-sync/sandbox.env (mode 0600) for --sandbox; the credentials there
    are kept across restarts.
    """
    from pls_sync.demo import (
        DEMO_WAREHOUSE,
        SANDBOX_ENV,
        read_sandbox_env,
        sandbox_settings,
        write_sandbox_env,
    )
    from pls_sync.demo_companies import demo_companies
    from pls_sync.sandbox.server import Sandbox

    try:
        previous = read_sandbox_env(SANDBOX_ENV)
    except (OSError, ValueError):
        previous = {}  # none yet, or unreadable: new credentials
    try:
        box = Sandbox(
            port=port,
            seed=seed,
            companies=demo_companies(seed, companies),
            session_id=previous.get("SALESFORCE_SESSION_ID") or None,
            hubspot_token=previous.get("HUBSPOT_ACCESS_TOKEN") or None,
            bare=bare,
            as_of=demo_as_of(DEMO_WAREHOUSE),
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} is in use: pass --port or stop the other process")
        fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
    box.salesforce.bulk_polls_in_progress = bulk_polls
    if box.hubspot is not None:
        box.hubspot.search_lag_seconds = search_lag
        box.hubspot.search_limiter.per_second = search_per_second or None
    settings = sandbox_settings(box.url, box.session_id, box.hubspot_token)
    try:
        write_sandbox_env(SANDBOX_ENV, settings)
    except OSError as exc:
        box.stop()
        fail(f"cannot write {SANDBOX_ENV}: {exc.strerror or exc}")
    lines = [f"CRM sandbox on {box.url}", *(f"  {k}={v}" for k, v in settings.items())]
    lines += [
        f"  request counts: GET {box.url}/__sandbox/counts",
        f"Settings saved to {SANDBOX_ENV}: add --sandbox to run, plan, explain, export, lists, "
        "status or validate in another terminal.",
    ]
    # soft_wrap: the session id must stay on one line to be copied.
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    with contextlib.suppress(KeyboardInterrupt):
        box.serve_forever()


@app.command()
def schedule(
    config: ConfigOption = Path("config/pls_sync.yaml"),
    run_now: Annotated[
        bool, typer.Option("--run-now", help="Run every job once at start.")
    ] = False,
    sandbox: SandboxOption = False,
) -> None:
    """The long-running cron process: runs the configured jobs until SIGTERM or SIGINT."""
    import structlog

    from pls_sync.bootstrap import build_adapters, build_state_store
    from pls_sync.errors import RunLockedError
    from pls_sync.scheduler import LockedOut, SyncScheduler, now_utc
    from pls_sync.service import RunOptions, run_sync

    settings = load_or_exit(config)
    try:
        store = build_state_store(settings)
    except PlsSyncError as exc:
        fail(redact(str(exc)), label="State store unavailable")
    batch_sizes = {n: d.batch_size for n, d in settings.destinations.items()}

    def run_job(name: str, destinations: tuple[str, ...] | None) -> None:
        # Fresh adapters per run: new sessions, a re-read warehouse, nothing stale kept.
        adapters = build_adapters(settings, only=destinations, full_refresh=sandbox)
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
        structlog.get_logger("pls_sync.cli").info(
            "scheduled_run_summary", job=name, status=result.status, summary=result.summary
        )
        report_after_run(settings)
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
    """Console-script entry point.

    Every error a user can cause is handled in its command; an error nobody foresaw (a bug)
    still ends in one line, unless ``PLS_SYNC_TRACEBACK=1`` asks for the traceback.
    """
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("PLS_SYNC_TRACEBACK") == "1":
            raise
        message = redact(f"{type(exc).__name__}: {exc}")
        err_console.print(
            f"pls-sync: unexpected error: {message} (PLS_SYNC_TRACEBACK=1 shows where)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # python -m pls_sync.cli, as the pls-sync script
    main()
