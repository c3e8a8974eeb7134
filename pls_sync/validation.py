"""``pls-sync validate``: the configuration against reality, before anything runs.

The static checks (every file, every key, with lines) happen when the settings load. This module
goes further, and reports what it finds like those checks, ``file:line: key: message``:

* the schedule: each job's next three run times in its time zone, so a user sees what the cron
  expression means;
* the warehouse: it answers, holds the built-in model's tables and columns (or the custom SQL
  model compiles, returns no rows when asked for none, and has the columns scoring names);
* the event taxonomy against the warehouse's last 90 days: frequent event names that no
  category maps, mapped names never seen; a taxonomy none of whose intent names occurs is an
  error, since every signal would be silent;
* each enabled CRM's live schema, when its credentials are there: the object, the domain
  fields, every mapped field (exists, writable, a type that holds the values) and every value
  pls-sync can write into a picklist or enumeration.

Errors make ``validate`` exit 2 (the configuration does not fit reality), a CRM that cannot be
reached exits 1, warnings alone exit 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pls_sync.config import Settings
from pls_sync.config_yaml import KeyPath
from pls_sync.cron import next_fire_times
from pls_sync.errors import ConfigIssue, PlsSyncError, redact
from pls_sync.models import FieldType
from pls_sync.scoring import Condition, ConditionGroup, Rule

if TYPE_CHECKING:
    from rich.console import Console

TAXONOMY_DAYS = 90
# Categories whose events feed signals and components; "ignored" names are there to be dropped.
INTENT_CATEGORIES = (
    "legal_page_view",
    "pricing_page_view",
    "admin_change",
    "core_feature",
    "enterprise_feature",
)
UNMAPPED_SHOWN = 10


@dataclass(slots=True)
class ValidationReport:
    """What ``validate`` found: lines to read, then errors, warnings and what it could not reach."""

    notes: list[str] = field(default_factory=list)
    errors: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    # CRMs whose schema lacks what the mapping needs: ``pls-sync setup`` can make it.
    needs_setup: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2 when the configuration does not fit reality, 1 when a CRM could not be reached."""
        if self.errors:
            return 2
        return 1 if self.unreachable else 0


def schedule_notes(settings: Settings, now: datetime) -> list[str]:
    """Each job with its next three run times, in the schedule's time zone."""
    zone = settings.schedule.timezone
    notes = [f"Schedule ({zone}):"]
    for job in settings.schedule.jobs:
        times = next_fire_times(job.cron, zone, now, count=3)
        shown = ", ".join(t.strftime("%a %Y-%m-%d %H:%M %Z") for t in times) or "never"
        only = f" [{', '.join(job.destinations)}]" if job.destinations else ""
        notes.append(f"  {job.name} ({job.cron}){only}: next {shown}")
    return notes


# ------------------------------------------------------------------------------ warehouse


def scoring_metric_keys(settings: Settings) -> Iterator[tuple[str, KeyPath]]:
    """Every metric the scoring model reads, with its key path in the scoring file."""
    model = settings.scoring
    for ratio in model.ratios:
        yield ratio.numerator, ("ratios", ratio.name, "numerator")
        yield ratio.denominator, ("ratios", ratio.name, "denominator")
    for metric_sum in model.sums:
        for metric, _curve in metric_sum.parts:
            yield metric, ("sums", metric_sum.name, metric)
    for component in model.components:
        for index, metric in enumerate(component.metrics):
            yield metric, ("components", component.name, "metrics", index)
    for index, signal in enumerate(model.signals):
        yield from _rule_metrics(signal.when, ("signals", index, "when"))


def _rule_metrics(rule: Rule, path: KeyPath) -> Iterator[tuple[str, KeyPath]]:
    if isinstance(rule, Condition):
        yield rule.metric, path + ("metric",)
    elif isinstance(rule, ConditionGroup):
        for index, inner in enumerate(rule.rules):
            yield from _rule_metrics(inner, path + (rule.mode, index))


def check_warehouse(settings: Settings, as_of: datetime, report: ValidationReport) -> None:
    """The warehouse answers and holds what the model reads; the taxonomy meets the events."""
    from pls_sync.bootstrap import build_usage_source, enabled_destinations

    main = settings.config_path
    wh = settings.warehouse
    try:
        source = build_usage_source(settings)
    except PlsSyncError as exc:
        report.errors.append(settings.lines.issue(main, ("warehouse", "url"), redact(str(exc))))
        return
    described = source.describe()
    probe = source.probe(as_of)
    for problem in probe.problems:
        report.errors.append(settings.lines.issue(main, problem.key, problem.message))
    if probe.problems:
        return
    if not wh.is_builtin:
        columns = {c.lower() for c in probe.columns or ()}
        ratios = {ratio.name.lower() for ratio in settings.scoring.ratios}
        ratios |= {metric_sum.name.lower() for metric_sum in settings.scoring.sums}
        for metric, key in scoring_metric_keys(settings):
            if metric.lower() not in columns | ratios:
                report.errors.append(
                    settings.lines.issue(
                        settings.scoring_path or main,
                        key,
                        f"the SQL model {wh.model} returns no column {metric!r} "
                        f"(it returns: {', '.join(probe.columns or ())})",
                    )
                )
        for name in enabled_destinations(settings):
            mapping = settings.destinations[name].mapping
            for field_mapping in mapping.fields:
                metric = field_mapping.source.removeprefix("metrics.")
                if metric != field_mapping.source and metric.lower() not in columns | ratios:
                    report.errors.append(
                        mapping.issue(
                            ("fields", field_mapping.target),
                            f"the SQL model {wh.model} returns no column {metric!r}: "
                            f"{field_mapping.target} would never be written",
                        )
                    )
        report.notes.append(
            f"Warehouse {described}: the SQL model {wh.model} runs and returns "
            f"{len(probe.columns or ())} columns"
        )
        return
    report.notes.append(
        f"Warehouse {described}: tables {wh.users_table} and {wh.events_table} "
        "hold every column the built-in model reads"
    )
    try:
        counts = source.event_name_counts(as_of, days=TAXONOMY_DAYS)
    except PlsSyncError as exc:
        report.errors.append(
            settings.lines.issue(main, ("warehouse", "events_table"), redact(str(exc)))
        )
        return
    check_taxonomy(settings, counts, as_of, report)


def check_taxonomy(
    settings: Settings,
    counts: Sequence[tuple[str, int]],
    as_of: datetime,
    report: ValidationReport,
) -> None:
    """The event taxonomy against the event names the warehouse saw in the last 90 days."""
    taxonomy = settings.warehouse.taxonomy
    path = settings.warehouse.taxonomy_path
    seen = dict(counts)
    since = (as_of - timedelta(days=TAXONOMY_DAYS)).date().isoformat()
    window = f"between {since} and {as_of.date().isoformat()}"
    if path is None:
        where, key_of = settings.config_path, None
    else:
        where, key_of = path, ("categories",)
    mapped = {name for names in taxonomy.values() for name in names}
    if not seen:
        report.errors.append(
            settings.lines.issue(
                where,
                key_of or ("warehouse", "events_table"),
                f"the events table holds no named event {window}: every score would be 0 "
                "(is the table loaded? validate older data with --as-of)",
            )
        )
        return
    intent = [name for category in INTENT_CATEGORIES for name in taxonomy.get(category, ())]
    if not any(name in seen for name in intent):
        report.errors.append(
            settings.lines.issue(
                where,
                key_of or ("warehouse", "event_taxonomy"),
                f"no event name of the taxonomy occurs {window}: every intent signal would be "
                "silent; the most frequent names are "
                + ", ".join(f"{name} ({count:,})" for name, count in counts[:UNMAPPED_SHOWN]),
            )
        )
        return
    for category, names in taxonomy.items():
        for index, name in enumerate(names):
            if name not in seen and path is not None:
                report.warnings.append(
                    settings.lines.issue(
                        path,
                        ("categories", category, index),
                        f"{name!r} was not seen {window}: a misspelt name never counts",
                    )
                )
    unmapped = [(name, count) for name, count in counts if name not in mapped]
    used = sum(1 for name in mapped if name in seen)
    report.notes.append(f"Event taxonomy: {used} of {len(mapped)} mapped event names seen {window}")
    if unmapped:
        # Names in no category are plain usage by design: shown so that a missing intent
        # event (a new pricing page, a renamed admin event) is noticed, not as a problem.
        shown = ", ".join(f"{name} ({count:,})" for name, count in unmapped[:UNMAPPED_SHOWN])
        more = (
            f" and {len(unmapped) - UNMAPPED_SHOWN} more" if len(unmapped) > UNMAPPED_SHOWN else ""
        )
        report.notes.append(
            f"  {len(unmapped)} event name(s) in no category count as plain usage; the most "
            f"frequent: {shown}{more} (map intent events, list accidental ones under ignored)"
        )


# ------------------------------------------------------------------------------ CRMs


def check_crm(
    settings: Settings, report: ValidationReport, env: Mapping[str, str] | None = None
) -> None:
    """Each enabled destination's mapping against its live schema, when credentials are there."""
    from pls_sync.bootstrap import build_destination, enabled_destinations
    from pls_sync.demo import SANDBOX_ENV
    from pls_sync.schema_check import schema_issues
    from pls_sync.service import writable_values

    values = writable_values(settings.scoring, settings.channels)
    for name in enabled_destinations(settings):
        mapping = settings.destinations[name].mapping
        try:
            client = build_destination(name, settings, env)
        except PlsSyncError as exc:
            hint = "; for the local sandbox add --sandbox" if SANDBOX_ENV.is_file() else ""
            report.notes.append(f"{name}: live schema not checked ({redact(str(exc))}){hint}")
            continue
        try:
            specs = client.describe(mapping.object)
        except PlsSyncError as exc:
            report.unreachable.append(f"{name}: cannot read the schema of {mapping.object}: {exc}")
            continue
        errors, warnings = schema_issues(mapping, specs, values)
        report.errors.extend(errors)
        report.warnings.extend(warnings)
        if errors:
            report.needs_setup.append(name)
        if not errors:
            report.notes.append(
                f"{name}: {len(mapping.match.domain_fields)} domain field(s) and all "
                f"{len(mapping.fields)} mapped fields fit the live schema of {mapping.object}"
            )
        if settings.channels.alerts_enabled and name in ALERT_TASKS:
            check_alert_key(settings, name, client, report)


# The task object, the config key naming its alert-key field, and that key's default.
ALERT_TASKS = {
    "salesforce": ("Task", "salesforce_key_field"),
    "hubspot": ("tasks", "hubspot_key_property"),
}


def check_alert_key(settings: Settings, name: str, client: Any, report: ValidationReport) -> None:
    """Rep alerts need their key field on the CRM's tasks: a text field, and on Salesforce an
    External ID, because tasks are created by upsert on it (a resent request cannot make a
    second task). Reported against ``alerts.<key>`` in ``config/channels.yaml``."""
    task_object, config_key = ALERT_TASKS[name]
    channels = settings.channels
    field_name = (
        channels.sf_alert_key_field if name == "salesforce" else channels.hs_alert_key_property
    )
    try:
        specs = client.describe(task_object)
    except PlsSyncError as exc:
        report.unreachable.append(f"{name}: cannot read the schema of {task_object}: {exc}")
        return
    spec = specs.get(field_name) or next(
        (s for s in specs.values() if s.name.lower() == field_name.lower()), None
    )
    problem: str | None = None
    if spec is None:
        problem = f"{task_object} has no field {field_name}: create it (Text, 64) for rep alerts"
    elif spec.type is not FieldType.STRING:
        problem = f"{task_object}.{spec.name} is {spec.type.value}, not text: alert keys are text"
    elif name == "salesforce" and not spec.external_id:
        problem = (
            f"Task.{spec.name} is not an External ID: tick 'External ID' on the field, so "
            "pls-sync can create each task by upsert and a resent request cannot make a second"
        )
    if problem is None and spec is not None:
        report.notes.append(f"{name}: rep alerts are keyed by {task_object}.{spec.name}")
        return
    path = settings.channels_path or settings.config_path
    report.errors.append(settings.lines.issue(path, ("alerts", config_key), str(problem)))
    if name not in report.needs_setup:
        report.needs_setup.append(name)


def validate_settings(
    settings: Settings,
    now: datetime,
    *,
    as_of: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> ValidationReport:
    """Everything ``validate`` checks past the static config: schedule, warehouse, CRMs."""
    report = ValidationReport()
    report.notes.extend(schedule_notes(settings, now))
    check_warehouse(settings, as_of or now, report)
    check_crm(settings, report, env)
    return report


def print_report(console: Console, report: ValidationReport) -> None:
    """Notes, then warnings and errors as ``file:line: key: message``, then what to do next."""
    for note in report.notes:
        console.print(note, highlight=False, soft_wrap=True)
    for line in report.unreachable:
        console.print(f"[red]{line}[/red]", highlight=False, soft_wrap=True)
    if report.warnings:
        console.print(f"[yellow]{len(report.warnings)} warning(s):[/yellow]")
        for issue in report.warnings:
            console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
    if report.errors:
        console.print(f"[bold red]{len(report.errors)} error(s):[/bold red]")
        for issue in report.errors:
            console.print(f"  {issue}", markup=False, highlight=False, soft_wrap=True)
        console.print(
            "Fix the errors above (file:line: key), then run `pls-sync validate` again.",
            highlight=False,
            soft_wrap=True,
        )
        if report.needs_setup:
            only = " ".join(f"-d {name}" for name in report.needs_setup)
            console.print(
                f"Missing fields or picklist values in {', '.join(report.needs_setup)}: "
                f"`pls-sync setup {only}` shows what it would create, `--apply` creates it.",
                highlight=False,
                soft_wrap=True,
            )
    elif report.unreachable:
        console.print(
            "Check the CRM credentials and network, then run `pls-sync validate` again.",
            highlight=False,
        )
    else:
        console.print(
            "Everything checked fits: `pls-sync plan` shows what a run would write.",
            highlight=False,
        )
