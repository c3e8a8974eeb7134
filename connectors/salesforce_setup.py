"""Salesforce as a ``SchemaAdmin``: creates pls-sync's custom fields and grants access to them.

Fields are created and changed through the Tooling API (``tooling/sobjects/CustomField``, a
``FullName`` and its ``Metadata``); a change reads the field's whole ``Metadata`` first and sends
it back with the change, since an update replaces the definition ("If picklist values are
missing from a component definition, they get deactivated when deployed"). Access is a
permission set (``PLS_Sync_Integration``) with a ``FieldPermissions`` row per field, assigned to
the running user (from the OpenID Connect UserInfo endpoint) when asked. Every call goes through
``SalesforceDestination.call``: counted, retried, errors translated.

References:
https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_customfield.htm
https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/customfield.htm
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_fieldpermissions.htm
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_objects_permissionsetassignment.htm
https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_using_userinfo_endpoint.htm
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from connectors.salesforce import (
    SalesforceDestination,
    check_field_name,
    check_object_name,
    field_spec,
    soql_quote,
)
from pls_sync.crm_setup import (
    ADD_VALUES,
    CREATE,
    EDIT,
    MAKE_EXTERNAL_ID,
    SALESFORCE_CUSTOM_SUFFIX,
    FieldRequirement,
    SetupStep,
)
from pls_sync.errors import FatalError
from pls_sync.models import FieldSpec, FieldType

T = TypeVar("T")

PERMISSION_SET_NAME = "PLS_Sync_Integration"
PERMISSION_SET_LABEL = "pls-sync integration"
LONG_TEXT_VISIBLE_LINES = 3
# The permissions Salesforce requires, as Setup names them.
CUSTOMIZE_APPLICATION = "Customize Application"
MANAGE_PERMISSION_SETS = "Manage Profiles and Permission Sets"
ASSIGN_PERMISSION_SETS = "Assign Permission Sets"
# Error codes that mean the running user may not do this.
_REFUSED = frozenset(
    {
        "INSUFFICIENT_ACCESS_OR_READONLY",
        "INSUFFICIENT_ACCESS",
        "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY",
        "FORBIDDEN",
        "API_DISABLED_FOR_ORG",
    }
)
PERMISSION_ERROR_CODE = "setup_permission"


def field_metadata(req: FieldRequirement) -> dict[str, Any]:
    """The Tooling API ``Metadata`` creating ``req``'s field (CustomField, Metadata API names)."""
    metadata: dict[str, Any] = {"label": req.label, "description": f"pls-sync: {req.source}"}
    kind = req.type
    if kind is FieldType.NUMBER:
        metadata.update(type="Number", precision=req.precision, scale=req.scale)
    elif kind is FieldType.DATETIME:
        metadata.update(type="DateTime")
    elif kind is FieldType.TEXTAREA:
        metadata.update(
            type="LongTextArea", length=req.length, visibleLines=LONG_TEXT_VISIBLE_LINES
        )
    elif kind is FieldType.PICKLIST:
        metadata.update(
            type="Picklist",
            valueSet={
                "restricted": True,
                "valueSetDefinition": {
                    "sorted": False,
                    "value": [_picklist_value(value) for value in req.values],
                },
            },
        )
    else:
        metadata.update(type="Text", length=req.length)
        if req.external_id:
            metadata.update(externalId=True, unique=True)
    return metadata


def _picklist_value(value: str) -> dict[str, Any]:
    return {"fullName": value, "label": value, "default": False}


def _full_name(req: FieldRequirement) -> str:
    return f"{check_object_name(req.object)}.{check_field_name(req.name, allow_path=False)}"


def _developer_name(name: str) -> tuple[str | None, str]:
    """(namespace prefix, DeveloperName) of a custom field: ``ns__Score__c`` -> (ns, Score)."""
    base = name.removesuffix(SALESFORCE_CUSTOM_SUFFIX)
    namespace, sep, rest = base.partition("__")
    return (namespace, rest) if sep else (None, base)


class SalesforceSchemaAdmin:
    """Creates and extends the fields pls-sync needs in one org, and grants the access to them.

    ``destination`` makes every call (counted, retried, translated); ``permission_set`` and
    ``label`` name the permission set that carries the integration user's field access.
    """

    def __init__(
        self,
        destination: SalesforceDestination,
        *,
        permission_set: str = PERMISSION_SET_NAME,
        label: str = PERMISSION_SET_LABEL,
    ) -> None:
        self.destination = destination
        self.permission_set = check_field_name(permission_set, allow_path=False)
        self.label = label

    # SchemaAdmin

    def live_schema(self, objects: Sequence[str]) -> dict[str, dict[str, FieldSpec]]:
        """Each object's fields by name, from a fresh describe (never the destination's cache)."""
        return {
            name: {spec.name: spec for spec in (field_spec(f) for f in self._describe(name))}
            for name in objects
        }

    def apply(self, step: SetupStep) -> str:
        """Create the field, add the missing picklist values, or make it an External ID; one
        line saying what was done. ``FatalError`` naming the permission the user lacks."""
        req = step.requirement
        where = f"{req.object}.{req.name}"
        if step.action == CREATE:
            return self._create(req)
        if step.action == ADD_VALUES:
            self._change(req, lambda metadata: _add_values(where, metadata, step.missing_values))
            return f"added {', '.join(step.missing_values)} to {where}"
        if step.action == MAKE_EXTERNAL_ID:
            self._change(req, _make_external_id)
            return f"made {where} an External ID (unique)"
        return f"nothing to do for {where} ({step.action})"

    def grant_access(self, needed: Sequence[FieldRequirement], *, assign: bool) -> list[str]:
        """Ensure the permission set, a FieldPermissions row per permissionable field (edit:
        read and edit; read: read) and, with ``assign``, its assignment to the running user.
        Lines of what was done; none when everything was already in place."""
        done: list[str] = []
        permission_set_id = self._permission_set_id(done)
        done.extend(self._grant_fields(permission_set_id, needed))
        if assign:
            done.extend(self._assign(permission_set_id))
        return done

    # fields

    def _describe(self, name: str) -> list[Mapping[str, Any]]:
        path = f"sobjects/{check_object_name(name)}/describe/"
        timeout = self.destination.timeout
        payload = self.destination.call("describe", lambda sf: sf.restful(path, timeout=timeout))
        fields = payload.get("fields") if isinstance(payload, Mapping) else None
        if not isinstance(fields, list):
            raise FatalError(f"Salesforce describe of {name} returned no fields")
        return [f for f in fields if isinstance(f, Mapping)]

    def _create(self, req: FieldRequirement) -> str:
        body = {"FullName": _full_name(req), "Metadata": field_metadata(req)}
        where = f"{req.object}.{req.name}"
        try:
            self._as(
                CUSTOMIZE_APPLICATION,
                f"create {where}",
                "write",
                lambda sf: sf.restful(
                    "tooling/sobjects/CustomField", method="POST", json=body, timeout=self._timeout
                ),
            )
        except FatalError as exc:
            if exc.code != "DUPLICATE_DEVELOPER_NAME":
                raise
            # A create whose answer was lost and that was retried finds its own field.
            return f"{where} exists already (created by an earlier attempt or by hand)"
        return f"created {where} ({req.describe_type('salesforce')})"

    @property
    def _timeout(self) -> float:
        return self.destination.timeout

    def _change(
        self, req: FieldRequirement, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """Read the field's whole Metadata, change it, and send it all back."""
        field_id = self._custom_field_id(req)
        path = f"tooling/sobjects/CustomField/{field_id}"
        record = self.destination.call(
            "describe", lambda sf: sf.restful(path, timeout=self._timeout)
        )
        metadata = record.get("Metadata") if isinstance(record, Mapping) else None
        if not isinstance(metadata, Mapping):
            raise FatalError(f"Salesforce returned no Metadata for {req.object}.{req.name}")
        body = {"Metadata": change(copy.deepcopy(dict(metadata)))}
        self._as(
            CUSTOMIZE_APPLICATION,
            f"change {req.object}.{req.name}",
            "write",
            lambda sf: sf.restful(path, method="PATCH", json=body, timeout=self._timeout),
        )

    def _custom_field_id(self, req: FieldRequirement) -> str:
        namespace, developer_name = _developer_name(req.name)
        soql = (
            "SELECT Id FROM CustomField WHERE TableEnumOrId = "
            f"{soql_quote(check_object_name(req.object))} AND DeveloperName = "
            f"{soql_quote(developer_name)} AND NamespacePrefix = "
            f"{soql_quote(namespace) if namespace else 'null'}"
        )
        page = self.destination.call(
            "describe",
            lambda sf: sf.toolingexecute("query/", params={"q": soql}, timeout=self._timeout),
        )
        records = page.get("records") if isinstance(page, Mapping) else None
        if not isinstance(records, list) or len(records) != 1:
            raise FatalError(
                f"Salesforce's Tooling API does not list the custom field {req.object}.{req.name}",
                code="NO_CUSTOM_FIELD",
            )
        return str(records[0]["Id"])

    # access

    def _query(self, soql: str) -> list[Mapping[str, Any]]:
        page = self.destination.call("read", lambda sf: sf.query_all(soql, timeout=self._timeout))
        records = page.get("records") if isinstance(page, Mapping) else None
        return [r for r in records or () if isinstance(r, Mapping)]

    def _permission_set_id(self, done: list[str]) -> str:
        found = self._query(
            f"SELECT Id FROM PermissionSet WHERE Name = {soql_quote(self.permission_set)}"
        )
        if found:
            return str(found[0]["Id"])
        body = {
            "Name": self.permission_set,
            "Label": self.label,
            "Description": "Field access for pls-sync's integration user (pls-sync setup)",
        }
        created = self._as(
            MANAGE_PERMISSION_SETS,
            f"create the permission set {self.permission_set}",
            "write",
            lambda sf: sf.restful(
                "sobjects/PermissionSet/", method="POST", json=body, timeout=self._timeout
            ),
        )
        done.append(f"created permission set {self.permission_set} ({self.label})")
        return str(created["id"])

    def _permissionable(self, needed: Sequence[FieldRequirement]) -> list[FieldRequirement]:
        """The requirements whose field exists and takes field-level security (custom fields
        and optional standard ones; a required standard field is always visible)."""
        keep: list[FieldRequirement] = []
        for obj in dict.fromkeys(req.object for req in needed):
            fields = {str(f.get("name", "")).lower(): f for f in self._describe(obj)}
            for req in needed:
                entry = fields.get(req.name.lower()) if req.object == obj else None
                if entry is not None and entry.get("permissionable", entry.get("custom")):
                    keep.append(req)
        return keep

    def _grant_fields(
        self, permission_set_id: str, needed: Sequence[FieldRequirement]
    ) -> list[str]:
        existing = {
            str(row["Field"]).lower(): row
            for row in self._query(
                "SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions "
                f"WHERE ParentId = {soql_quote(permission_set_id)}"
            )
        }
        granted: dict[str, list[str]] = {}
        for req in self._permissionable(needed):
            name = f"{req.object}.{req.name}"
            edit = req.access == EDIT
            row = existing.get(name.lower())
            if (
                row is not None
                and row.get("PermissionsRead")
                and (row.get("PermissionsEdit") or not edit)
            ):
                continue
            body: dict[str, Any] = {"PermissionsRead": True, "PermissionsEdit": edit}
            if row is None:
                body.update(ParentId=permission_set_id, SobjectType=req.object, Field=name)
                path, method = "sobjects/FieldPermissions/", "POST"
            else:
                path, method = f"sobjects/FieldPermissions/{row['Id']}", "PATCH"
            self._send(MANAGE_PERMISSION_SETS, f"grant access to {name}", path, method, body)
            granted.setdefault("read and edit" if edit else "read", []).append(name)
        return [
            f"granted {access} on {', '.join(names)} (permission set {self.permission_set})"
            for access, names in granted.items()
        ]

    def _assign(self, permission_set_id: str) -> list[str]:
        info = self.destination.call("read", lambda sf: sf.oauth2("userinfo"))
        user_id = info.get("user_id") if isinstance(info, Mapping) else None
        if not isinstance(user_id, str) or not user_id:
            raise FatalError("Salesforce's UserInfo endpoint did not say who the running user is")
        who = str(info.get("preferred_username") or user_id) if isinstance(info, Mapping) else ""
        assigned = self._query(
            "SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = "
            f"{soql_quote(user_id)} AND PermissionSetId = {soql_quote(permission_set_id)}"
        )
        if assigned:
            return []
        body = {"AssigneeId": user_id, "PermissionSetId": permission_set_id}
        try:
            self._as(
                ASSIGN_PERMISSION_SETS,
                f"assign {self.permission_set}",
                "write",
                lambda sf: sf.restful(
                    "sobjects/PermissionSetAssignment/",
                    method="POST",
                    json=body,
                    timeout=self._timeout,
                ),
            )
        except FatalError as exc:
            if exc.code == "DUPLICATE_VALUE":  # assigned meanwhile: what we wanted
                return []
            raise
        return [f"assigned {self.permission_set} to the running user {who}"]

    # errors

    def _send(self, permission: str, what: str, path: str, method: str, body: Any) -> Any:
        """One REST write (``restful``) whose refusal names ``permission``."""
        return self._as(
            permission,
            what,
            "write",
            lambda sf: sf.restful(path, method=method, json=body, timeout=self._timeout),
        )

    def _as(self, permission: str, what: str, kind: str, fn: Callable[[Any], T]) -> T:
        """``destination.call`` with a refusal turned into one line naming ``permission``."""
        try:
            return self.destination.call(kind, fn)
        except FatalError as exc:
            if exc.code not in _REFUSED:
                raise
            raise FatalError(
                f"cannot {what}: the integration user lacks '{permission}' "
                f"(Salesforce refused: {exc})",
                code=PERMISSION_ERROR_CODE,
            ) from None


def _value_set_definition(where: str, metadata: dict[str, Any]) -> dict[str, Any]:
    value_set = metadata.get("valueSet")
    if not isinstance(value_set, dict):
        raise FatalError(f"{where} is not a picklist with its own values", code="NOT_A_PICKLIST")
    if value_set.get("valueSetName"):
        raise FatalError(
            f"{where} takes its values from the global value set {value_set['valueSetName']}: "
            "add the values there in Setup",
            code="GLOBAL_VALUE_SET",
        )
    definition = value_set.get("valueSetDefinition")
    if not isinstance(definition, dict):
        definition = value_set["valueSetDefinition"] = {"sorted": False, "value": []}
    if not isinstance(definition.get("value"), list):
        definition["value"] = []
    return definition


def _add_values(where: str, metadata: dict[str, Any], missing: Sequence[str]) -> dict[str, Any]:
    """``metadata`` with ``missing`` appended to its picklist values, every other one kept."""
    definition = _value_set_definition(where, metadata)
    have = {str(v.get("fullName", "")).lower() for v in definition["value"] if isinstance(v, dict)}
    definition["value"].extend(_picklist_value(v) for v in missing if v.lower() not in have)
    return metadata


def _make_external_id(metadata: dict[str, Any]) -> dict[str, Any]:
    metadata.update(externalId=True, unique=True)
    return metadata
