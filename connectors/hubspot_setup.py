"""``pls-sync setup`` on HubSpot: property groups and properties through the properties API.

``HubSpotSchemaAdmin`` implements the ``SchemaAdmin`` port over a ``HubSpotDestination``, whose
``call`` paces, counts, retries and translates every request. A property is created in the
group ``pls_sync`` ("Product-qualified accounts"), made on its object once per run
(``POST /crm/v3/properties/{objectType}/groups``; a 409 means it is already there). Values are
added to an enumeration by replacing its options with all of them plus the new ones
(``PATCH /crm/v3/properties/{objectType}/{name}``: "you must include all of the options"), so
none is ever dropped. HubSpot has no field-level permissions for a private app's token, so
``grant_access`` has nothing to do; a token without the schema scope gets a ``FatalError``
naming it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from hubspot.crm.properties import OptionInput, PropertyCreate, PropertyGroupCreate, PropertyUpdate
from hubspot.crm.properties.exceptions import ApiException

from connectors.hubspot import HubSpotDestination, field_spec
from pls_sync.crm_setup import ADD_VALUES, CREATE, MAKE_EXTERNAL_ID, FieldRequirement, SetupStep
from pls_sync.errors import AuthError, FatalError
from pls_sync.models import FieldSpec, FieldType

GROUP_NAME = "pls_sync"
GROUP_LABEL = "Product-qualified accounts"
PERMISSION_CODE = "setup_permission"
MISSING_SCOPES = "MISSING_SCOPES"
# The scope each object's property reads and changes need, as (read, write): a private app's
# ``crm.schemas.<object>.*``; tasks (engagements) are documented with the contacts scopes.
SCHEMA_SCOPES = {
    "companies": ("crm.schemas.companies.read", "crm.schemas.companies.write"),
    "contacts": ("crm.schemas.contacts.read", "crm.schemas.contacts.write"),
    "tasks": ("crm.objects.contacts.read", "crm.objects.contacts.write"),
}
# HubSpot's (type, fieldType) for each kind of field pls-sync creates.
PROPERTY_TYPES: dict[FieldType, tuple[str, str]] = {
    FieldType.STRING: ("string", "text"),
    FieldType.TEXTAREA: ("string", "textarea"),
    FieldType.NUMBER: ("number", "number"),
    FieldType.DATETIME: ("datetime", "date"),
    FieldType.PICKLIST: ("enumeration", "select"),
}
# Objects whose properties may require unique values (``hasUniqueValue``); HubSpot documents
# unique-value properties for contacts and companies, not for tasks.
UNIQUE_VALUE_OBJECTS = frozenset({"companies", "contacts"})


class HubSpotSchemaAdmin:
    """``SchemaAdmin`` for HubSpot: reads property definitions, creates properties and adds
    enumeration options, through hubspot-api-client's properties API."""

    def __init__(self, destination: HubSpotDestination) -> None:
        self._destination = destination
        client = destination.client()
        self._core = client.crm.properties.core_api
        self._groups = client.crm.properties.groups_api
        self._grouped: set[str] = set()  # objects whose pls_sync group is known to exist

    def live_schema(self, objects: Sequence[str]) -> dict[str, dict[str, FieldSpec]]:
        """Each object's properties by name, read fresh from ``GET /crm/v3/properties/{type}``."""
        return {obj: self._describe(obj) for obj in objects}

    def apply(self, step: SetupStep) -> str:
        """Create a property or add options to an enumeration; one line saying what was done.

        Raises ``FatalError`` naming the scope the token lacks, or what HubSpot refused.
        """
        if step.action == CREATE:
            return self._create(step.requirement)
        if step.action == ADD_VALUES:
            return self._add_values(step.requirement, step.missing_values)
        if step.action == MAKE_EXTERNAL_ID:
            raise FatalError(
                f"{_where(step.requirement)}: HubSpot has no External ID to turn a property "
                "into; pls-sync never plans this step for HubSpot",
                code="setup_unsupported",
            )
        raise ValueError(f"nothing to apply for a {step.action!r} step")

    def grant_access(self, needed: Sequence[FieldRequirement], *, assign: bool) -> list[str]:
        """Nothing to grant: a private app's token reaches every property its scopes cover."""
        return []

    # ----------------------------------------------------------------- steps

    def _describe(self, obj: str) -> dict[str, FieldSpec]:
        response = self._call(
            obj,
            self._core,
            lambda: self._core.get_all(
                object_type=obj, archived=False, _request_timeout=self._timeout
            ),
            write=False,
        )
        specs = [field_spec(prop) for prop in response.results or []]
        return {spec.name: spec for spec in specs}

    def _create(self, req: FieldRequirement) -> str:
        self._ensure_group(req.object)
        kind, field_type = _property_type(req)
        body = PropertyCreate(
            name=req.name,
            label=req.label,
            type=kind,
            field_type=field_type,
            group_name=GROUP_NAME,
            description=f"Written by pls-sync: {req.source}.",
            options=[_option(value, order) for order, value in enumerate(req.values)] or None,
            has_unique_value=req.external_id and req.object in UNIQUE_VALUE_OBJECTS,
            form_field=False,
        )
        created = self._call(
            req.object,
            self._core,
            lambda: self._core.create(
                object_type=req.object, property_create=body, _request_timeout=self._timeout
            ),
            write=True,
            conflict_ok=True,
        )
        if created is None:
            raise FatalError(
                f"{_where(req)} was created by someone else since the plan; "
                "run `pls-sync setup` again to check it",
                code="setup_conflict",
            )
        return f"created {_where(req)} ({kind})"

    def _add_values(self, req: FieldRequirement, missing: Sequence[str]) -> str:
        """Replace the options with every current one plus ``missing`` (hidden ones shown)."""
        current = self._call(
            req.object,
            self._core,
            lambda: self._core.get_by_name(
                object_type=req.object, property_name=req.name, _request_timeout=self._timeout
            ),
            write=False,
        )
        options = _kept_options(current.options or [], missing)
        self._call(
            req.object,
            self._core,
            lambda: self._core.update(
                object_type=req.object,
                property_name=req.name,
                property_update=PropertyUpdate(options=options),
                _request_timeout=self._timeout,
            ),
            write=True,
        )
        return f"added {', '.join(missing)} to {_where(req)} (now {len(options)} options)"

    def _ensure_group(self, obj: str) -> None:
        """Create the ``pls_sync`` group on ``obj`` unless this admin knows it is there."""
        if obj in self._grouped:
            return
        group = PropertyGroupCreate(name=GROUP_NAME, label=GROUP_LABEL, display_order=-1)
        self._call(
            obj,
            self._groups,
            lambda: self._groups.create(
                object_type=obj, property_group_create=group, _request_timeout=self._timeout
            ),
            write=True,
            conflict_ok=True,  # the group is there already
        )
        self._grouped.add(obj)

    # ----------------------------------------------------------------- plumbing

    @property
    def _timeout(self) -> tuple[float, float]:
        return self._destination.timeout

    def _call(
        self,
        obj: str,
        api: Any,
        invoke: Callable[[], Any],
        *,
        write: bool,
        conflict_ok: bool = False,
    ) -> Any:
        """One request through the destination's ``call`` (paced, counted, retried,
        translated). With ``conflict_ok`` a 409 answers None; a 403 MISSING_SCOPES is a
        ``FatalError`` naming the scope HubSpot asked for."""
        refused: list[str] = []

        def watched() -> Any:
            try:
                return invoke()
            except ApiException as exc:
                status = int(getattr(exc, "status", 0) or 0)
                if status == 409 and conflict_ok:
                    return None
                if status == 403:
                    refused.extend(required_scopes(getattr(exc, "body", None)))
                raise

        try:
            return self._destination.call("write" if write else "describe", api, watched)
        except AuthError as error:
            if error.code != MISSING_SCOPES:
                raise
            scopes = refused or [_needed_scope(obj, write=write)]
            raise FatalError(
                _missing_scope_message(obj, scopes, write=write), code=PERMISSION_CODE
            ) from None


def _where(req: FieldRequirement) -> str:
    return f"{req.object}.{req.name}"


def _property_type(req: FieldRequirement) -> tuple[str, str]:
    """HubSpot's ``type`` and ``fieldType`` for a requirement."""
    try:
        return PROPERTY_TYPES[req.type]
    except KeyError:
        raise FatalError(
            f"{_where(req)}: pls-sync cannot create a HubSpot property of type {req.type.value}",
            code="setup_unsupported",
        ) from None


def _missing_scope_message(obj: str, scopes: Sequence[str], *, write: bool) -> str:
    named = " or ".join(f"'{scope}'" for scope in dict.fromkeys(scopes))
    doing = "create or change" if write else "read"
    return (
        f"the HubSpot access token lacks the scope {named} needed to {doing} {obj} properties "
        f"(HubSpot refused: 403 {MISSING_SCOPES}); add it to the private app's scopes and run "
        "`pls-sync setup` again"
    )


def _needed_scope(obj: str, *, write: bool) -> str:
    read_scope, write_scope = SCHEMA_SCOPES.get(
        obj, (f"crm.schemas.{obj}.read", f"crm.schemas.{obj}.write")
    )
    return write_scope if write else read_scope


def _option(value: str, order: int) -> OptionInput:
    """A new enumeration option: pls-sync writes the value, so the label is the value."""
    return OptionInput(label=value, value=value, display_order=order, hidden=False)


def _kept_options(current: Sequence[Any], missing: Sequence[str]) -> list[OptionInput]:
    """Every current option as it is, a hidden one among ``missing`` shown again, then the
    values not there at all, after the others."""
    wanted = {value.lower() for value in missing}
    kept = [
        OptionInput(
            label=option.label,
            value=option.value,
            display_order=option.display_order,
            hidden=bool(option.hidden) and str(option.value).lower() not in wanted,
            description=option.description,
        )
        for option in current
    ]
    present = {str(option.value).lower() for option in current}
    last = max((o.display_order or 0 for o in current), default=-1)
    added = [value for value in missing if value.lower() not in present]
    return kept + [_option(value, last + 1 + index) for index, value in enumerate(added)]


def required_scopes(body: Any) -> list[str]:
    """The scopes a 403 MISSING_SCOPES body lists (``errors[].context.requiredGranularScopes``)."""
    try:
        parsed = json.loads(body) if isinstance(body, str | bytes) else body
    except ValueError:
        return []
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    scopes: list[str] = []
    for error in errors if isinstance(errors, list) else []:
        context = error.get("context") if isinstance(error, dict) else None
        listed = context.get("requiredGranularScopes") if isinstance(context, dict) else None
        scopes.extend(str(scope) for scope in listed or [])
    return scopes
