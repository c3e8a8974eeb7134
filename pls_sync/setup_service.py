"""``pls-sync setup``: plan each CRM's fields from the mappings and, when asked, make them.

The plan comes from ``pls_sync.crm_setup`` (no I/O); a ``SchemaAdmin`` connector reads the live
schema and carries out the steps. Steps are applied in plan order and each is reported as it
is done, so a failure partway (a missing permission) still says what was created before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pls_sync.config import Settings
from pls_sync.crm_setup import CONFLICT, SetupStep, plan_setup, requirements
from pls_sync.errors import PlsSyncError
from pls_sync.ports import SchemaAdmin

# The object and field keying rep alerts, per destination (its config key in channels.yaml).
ALERT_TASK_OBJECTS = {"salesforce": "Task", "hubspot": "tasks"}


@dataclass
class DestinationSetup:
    """One destination's plan and, after ``--apply``, what was done or what stopped it."""

    name: str
    steps: list[SetupStep]
    done: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def conflicts(self) -> list[SetupStep]:
        """Steps pls-sync will not do: a field to fix by hand."""
        return [step for step in self.steps if step.action == CONFLICT]

    @property
    def pending(self) -> list[SetupStep]:
        """Steps ``--apply`` would carry out."""
        return [step for step in self.steps if step.changes]


def alert_key_field(name: str, settings: Settings) -> tuple[str, str] | None:
    """``(task object, key field)`` when rep alerts are on for ``name``, else ``None``."""
    channels = settings.channels
    if not channels.alerts_enabled or name not in ALERT_TASK_OBJECTS:
        return None
    key = channels.sf_alert_key_field if name == "salesforce" else channels.hs_alert_key_property
    return ALERT_TASK_OBJECTS[name], key


def setup_destination(
    name: str,
    settings: Settings,
    admin: SchemaAdmin,
    *,
    apply: bool = False,
    assign: bool = False,
) -> DestinationSetup:
    """Plan ``name``'s fields against its live schema; with ``apply``, make the changes and give
    the integration user access. Conflicts are never applied; a CRM error stops the rest and is
    kept in ``error`` after what was done."""
    from pls_sync.service import writable_values

    mapping = settings.destinations[name].mapping
    values = writable_values(settings.scoring, settings.channels)
    needed = requirements(mapping, values, alert_key=alert_key_field(name, settings))
    objects: Sequence[str] = list(dict.fromkeys(req.object for req in needed))
    steps = plan_setup(name, needed, admin.live_schema(objects))
    result = DestinationSetup(name, steps)
    if not apply:
        return result
    try:
        for step in result.pending:
            result.done.append(admin.apply(step))
        fit = [step.requirement for step in steps if step.action != CONFLICT]
        result.done.extend(admin.grant_access(fit, assign=assign))
    except PlsSyncError as exc:
        result.error = str(exc)
    return result
