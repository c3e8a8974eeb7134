"""How scored accounts map onto CRM fields: the typed form of ``mappings/*.yaml``. Standard library only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pls_sync.errors import ConfigIssue, format_key, nearest_line

ON_MULTIPLE_RULES = ("skip", "most_recently_modified", "parent")
# How a destination is named to people, in messages.
DESTINATION_NAMES: dict[str, str] = {"salesforce": "Salesforce", "hubspot": "HubSpot"}
NULL_POLICIES = ("skip", "clear")
# always: drift is repaired; if_empty: written only into an empty field; unless_edited: left
# alone once its CRM value differs from what pls-sync last wrote (a person changed it).
WRITE_POLICIES = ("always", "if_empty", "unless_edited")

# Identity, ownership and system fields are never written, whatever a mapping says.
FORBIDDEN_TARGETS: dict[str, frozenset[str]] = {
    "salesforce": frozenset(
        name.lower()
        for name in (
            "Id",
            "OwnerId",
            "Name",
            "ParentId",
            "RecordTypeId",
            "CreatedById",
            "CreatedDate",
            "LastModifiedById",
            "LastModifiedDate",
            "SystemModstamp",
            "IsDeleted",
            "MasterRecordId",
            "Website",
            "Type",
            "AccountNumber",
        )
    ),
    "hubspot": frozenset(
        (
            "hs_object_id",
            "hubspot_owner_id",
            "name",
            "domain",
            "hs_additional_domains",
            "createdate",
            "hs_lastmodifieddate",
            "hs_createdate",
            "hs_parent_company_id",
        )
    ),
}

# The sources a field can take its value from. ``metrics.<name>`` and ``components.<name>``
# name a usage metric or a score component's points.
SOURCES = (
    "score",
    "tier",
    "raw_tier",
    "signals",
    "lead_channel",
    "motion",
    "fit_segment",
    "qualified_since",
    "tier_since",
    "score_change",
    "previous_score",
    "scored_at",
    "first_seen",
    "domain",
    "account_key",
    "buyers",
)
SOURCE_PREFIXES = ("metrics.", "components.")


def is_known_source(source: str) -> bool:
    """True when ``source`` names something the planner can produce."""
    return source in SOURCES or any(
        source.startswith(prefix) and len(source) > len(prefix) for prefix in SOURCE_PREFIXES
    )


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """``target: source`` with how to treat a missing value and how to format it.

    ``null``: ``skip`` leaves the CRM value alone when the source has no value, ``clear``
    empties the field. ``join`` joins list values (signals, buyers). ``max_length`` truncates
    text (the field's own length from describe applies as well, whichever is shorter).
    ``write``: ``always`` repairs drift; ``if_empty`` writes only an empty field;
    ``unless_edited`` leaves a field a person changed (its CRM value is not what pls-sync
    last wrote there) and reports it.
    """

    target: str
    source: str
    null: str = "skip"
    join: str = "; "
    max_length: int | None = None
    write: str = "always"


@dataclass(frozen=True, slots=True)
class MatchRule:
    """How CRM records are found for a domain, and what to do when several share it."""

    domain_fields: tuple[str, ...]
    on_multiple: str = "most_recently_modified"


@dataclass(frozen=True, slots=True)
class DestinationMapping:
    """One destination's mapping: the object written, the match rule and the fields."""

    destination: str  # "salesforce" | "hubspot"
    object: str
    match: MatchRule
    fields: tuple[FieldMapping, ...]
    source_file: str = ""
    # Fields read, never written: the company's firmographics (``employees``: the CRM's
    # employee count field, e.g. NumberOfEmployees / numberofemployees), for the fit segment.
    firmographics: Mapping[str, str] = field(default_factory=dict)
    # The line of each key path in ``source_file``, so that a problem found against the live
    # CRM schema names its line like a static config check does.
    lines: Mapping[tuple[str | int, ...], int] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def targets(self) -> tuple[str, ...]:
        """The CRM field names this mapping writes."""
        return tuple(f.target for f in self.fields)

    @property
    def read_fields(self) -> tuple[str, ...]:
        """The CRM field names a read returns in ``CrmRecord.fields``: the targets, then the
        firmographic fields (read only), once each."""
        return tuple(dict.fromkeys((*self.targets, *self.firmographics.values())))

    def issue(self, key: tuple[str | int, ...], message: str) -> ConfigIssue:
        """A problem at ``key`` of the mapping file (``("fields", "PQA_Tier__c")``...)."""
        line = nearest_line(self.lines, key)
        return ConfigIssue(self.source_file or self.destination, line, format_key(key), message)
