"""Realistic, messy CRM data derived from the demo companies, deterministic by seed.

``crm_companies`` decides what the CRM knows about each demo company, independent of any one
CRM: about three quarters have an account, with websites typed every way reps type them
(``acme.com``, ``www.acme.com``, ``https://acme.com/``, ``http://www.acme.com/en-us``,
``ACME.COM``), some with only a ``Domain__c``, some with neither; duplicate accounts on one
domain; subsidiaries under a parent; CRM-only accounts with no product usage; leads and
contacts, some marketing qualified. ``seed_salesforce`` loads that picture into the sandbox org.

``crm_deals`` adds what sales closed, as of a date: the companies that bought in the demo
warehouse's story (``connectors.demo_warehouse.demo_intents``, the source of its ``conversions``
table) have a won deal dated the day they bought on their primary account; a purchase after the
as-of date is an open deal expected to close then. Other accounts have some lost and open deals;
a few won deals have no account. Both CRM sandboxes load the same deals.
"""

from __future__ import annotations

import functools
import random
import re
import zlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pls_sync.sandbox.salesforce import make_id

if TYPE_CHECKING:
    from pls_sync.sandbox.salesforce import SalesforceApi

SEED_EPOCH = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ACCOUNT_SHARE = 0.75
DEAL_WON, DEAL_LOST, DEAL_OPEN = "won", "lost", "open"
# Salesforce's open stages, in pipeline order (``crm_deals`` gives each open deal a progress).
SF_OPEN_STAGES = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
)
_SF_OPPORTUNITY_POD = "Op"  # seeded opportunities number their own ids: no other id moves

OWNERS: tuple[tuple[str, str], ...] = (
    ("Dana", "Whitfield"),
    ("Marcus", "Oyelaran"),
    ("Ingrid", "Solberg"),
    ("Tomás", "Ferreira"),
    ("Keiko", "Amano"),
    ("Ruth", "Abernathy"),
)
_FIRST = (
    "Alex", "Priya", "Marco", "Yuki", "Fatima", "Liam", "Chen", "Sofia", "Omar", "Hannah",
    "Diego", "Aisha", "Noah", "Elena", "Kwame", "Mia", "Ravi", "Zoe", "Jonas", "Leila",
)  # fmt: skip
_LAST = (
    "Garcia", "Patel", "Rossi", "Tanaka", "Haddad", "Murphy", "Wang", "Silva", "Nasser",
    "Becker", "Lopez", "Okoye", "Kowalski", "Dubois", "Novak", "Lindqvist", "Mensah", "Ito",
)  # fmt: skip
_TITLES = (
    "VP Engineering", "Head of Operations", "Software Engineer", "Marketing Manager", "CTO",
    "Product Manager", "Director of IT", "Analyst", "CFO", "Head of Procurement",
)  # fmt: skip
_LEAD_STATUSES = ("Open - Not Contacted", "Working - Contacted", "Closed - Not Converted")
_CRM_ONLY_A = (
    "Blue", "North", "Silver", "Granite", "Harbor", "Summit", "Cedar", "Atlas", "Copper",
    "Lumen", "Quarry", "Meridian", "Osprey", "Tidewater",
)  # fmt: skip
_CRM_ONLY_B = (
    "Logistics",
    "Analytics",
    "Foods",
    "Robotics",
    "Health",
    "Capital",
    "Media",
    "Energy",
)


class CompanyLike(Protocol):
    """What the seed reads from a demo company (``pls_sync.demo_companies.DemoCompany``)."""

    @property
    def name(self) -> str:
        """The company's name."""

    @property
    def domain(self) -> str:
        """Its registrable email domain."""

    @property
    def subdomains(self) -> tuple[str, ...]:
        """Labels of its subsidiaries' hosts (``eu`` for eu.acme.com)."""

    @property
    def industry(self) -> str:
        """Its industry."""

    @property
    def employees(self) -> int:
        """Its headcount."""


def owners() -> list[dict[str, str]]:
    """The sales reps who own CRM records, with their Salesforce User ids."""
    out = []
    for number, (first, last) in enumerate(OWNERS, start=1):
        handle = f"{first.lower().replace('á', 'a')}.{last.lower()}"
        out.append(
            {
                "id": make_id("005", number, pod="Ow"),
                "first_name": first,
                "last_name": last,
                "name": f"{first} {last}",
                "email": f"{handle}@pls-sync.sandbox",
            }
        )
    return out


def website_variants(domain: str, label: str | None = None) -> list[str]:
    """The ways a website for ``domain`` ends up typed into a CRM."""
    host = f"{label}.{domain}" if label else domain
    return [
        host,
        f"www.{host}",
        f"https://{host}/",
        f"http://www.{host}/en-us",
        host.upper(),
        f"https://www.{host}",
        f"http://{host}",
        f"{host}/",
    ]


_VARIANT_WEIGHTS = (30, 20, 15, 8, 6, 12, 5, 4)


_PERSONAL_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com")


def _person(rng: random.Random, domain: str | None) -> dict[str, str | None]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email = f"{first.lower()}.{last.lower()}@{domain}" if domain else None
    # Real CRMs hold leads who typed a personal address or junk; a hash (not the seeded
    # stream, which the rest of the seed depends on) picks about 1 in 12 of them.
    mark = zlib.crc32(f"{first}|{last}|{domain}".encode()) % 100
    if email and mark < 7:
        email = f"{first.lower()}{mark}@{_PERSONAL_MAIL[mark % len(_PERSONAL_MAIL)]}"
    elif email and mark == 7:
        email = f"{first.lower()} {last.lower()}"  # no @: typed into the wrong field
    return {"first_name": first, "last_name": last, "email": email, "title": rng.choice(_TITLES)}


def _stamp(rng: random.Random, low: float, high: float) -> datetime:
    return SEED_EPOCH - timedelta(days=rng.uniform(low, high), seconds=rng.randint(0, 86_399))


def crm_companies(companies: Sequence[CompanyLike], seed: int) -> list[dict[str, Any]]:
    """What the CRM holds about the demo companies: one dict per CRM company (or lead-only domain).

    Keys: ``key``, ``kind`` (primary, duplicate, subsidiary, crm_only, lead_only),
    ``has_account``, ``product_usage``, ``name``, ``domain`` (the true registrable domain, or None),
    ``website`` (as typed, or None), ``domain_field`` (the Domain__c value, or None), ``industry``,
    ``employees``, ``parent_key``, ``owner`` (see ``owners``), ``created``, ``last_modified``,
    ``contacts`` (first_name, last_name, email, title, mql) and ``leads`` (first_name,
    last_name, email, title, status). Parents come before their subsidiaries.
    """
    rng = random.Random(f"crm-{seed}")
    reps = owners()
    out: list[dict[str, Any]] = []

    def entry(kind: str, name: str, domain: str | None, **extra: Any) -> dict[str, Any]:
        created = _stamp(rng, 200, 1200)
        item: dict[str, Any] = {
            "key": f"crm-{len(out) + 1:05d}",
            "kind": kind,
            "has_account": True,
            "product_usage": kind not in ("crm_only",),
            "name": name,
            "domain": domain,
            "website": None,
            "domain_field": None,
            "industry": None,
            "employees": None,
            "parent_key": None,
            "owner": rng.choice(reps),
            "created": created,
            "last_modified": min(created + timedelta(days=rng.uniform(0, 400)), SEED_EPOCH),
            "contacts": [],
            "leads": [],
        }
        item.update(extra)
        out.append(item)
        return item

    def people(item: dict[str, Any], domain: str | None, mql_share: float) -> None:
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            person = _person(rng, domain)
            item["contacts"].append({**person, "mql": rng.random() < mql_share})
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            person = _person(rng, domain)
            status = (
                "Marketing Qualified" if rng.random() < mql_share else rng.choice(_LEAD_STATUSES)
            )
            item["leads"].append({**person, "status": status})

    for company in companies:
        domain = company.domain.lower()
        if rng.random() >= ACCOUNT_SHARE:
            if rng.random() < 0.3:  # no account, but marketing has leads at the domain
                item = entry("lead_only", company.name, domain, has_account=False)
                for _ in range(rng.choice((1, 1, 2))):
                    person = _person(rng, domain)
                    status = (
                        "Marketing Qualified" if rng.random() < 0.4 else rng.choice(_LEAD_STATUSES)
                    )
                    item["leads"].append({**person, "status": status})
            continue
        style = rng.random()
        website: str | None = rng.choices(website_variants(domain), _VARIANT_WEIGHTS)[0]
        domain_field: str | None = None
        if style < 0.10:  # only the custom Domain__c field is filled in
            website, domain_field = None, rng.choice((domain, f"www.{domain}", domain.upper()))
        elif style < 0.15:
            domain_field = domain
        elif style < 0.20:  # nobody typed a website: only the name could match
            website = None
        primary = entry(
            "primary",
            company.name,
            domain,
            website=website,
            domain_field=domain_field,
            industry=company.industry,
            employees=company.employees,
        )
        people(primary, domain, 0.2)
        if rng.random() < 0.07:  # a duplicate on the same domain, typed differently
            stem = re.sub(r"\s+(Inc\.?|LLC|Ltd\.?|GmbH|Corp\.?|Co\.)$", "", company.name)
            dup = entry(
                "duplicate",
                rng.choice((stem, f"{stem} (old)", f"{company.name}.", stem.upper())),
                domain,
                website=rng.choice(website_variants(domain)),
                industry=company.industry,
            )
            dup["last_modified"] = primary["last_modified"] - timedelta(days=rng.uniform(5, 300))
            people(dup, domain, 0.1)
        labels = [label for label in company.subdomains if label]
        if labels and rng.random() < 0.5:
            label = labels[0]
            suffix = label.upper() if len(label) <= 4 else label.title()
            child = entry(
                "subsidiary",
                f"{company.name} {suffix}",
                domain,
                website=rng.choice(website_variants(domain, label)[:4]),
                industry=company.industry,
                employees=max(1, company.employees // 5),
                parent_key=primary["key"],
            )
            people(child, f"{label}.{domain}", 0.15)

    taken = {c.domain.lower() for c in companies}
    crm_only = max(5, len(companies) // 10)
    for index in range(crm_only):
        word_a = _CRM_ONLY_A[index % len(_CRM_ONLY_A)]
        name = f"{word_a} {rng.choice(_CRM_ONLY_B)}"
        if index >= len(_CRM_ONLY_A):
            name += f" {index // len(_CRM_ONLY_A) + 1}"
        domain = re.sub(r"[^a-z0-9]+", "", name.lower()) + rng.choice((".com", ".io", ".co"))
        if domain in taken:
            continue
        taken.add(domain)
        item = entry(
            "crm_only",
            name,
            domain,
            website=rng.choices(website_variants(domain), _VARIANT_WEIGHTS)[0],
            industry=rng.choice(("Technology", "Retail", "Manufacturing", "Healthcare")),
            employees=rng.randint(20, 3000),
        )
        people(item, domain, 0.4)
    return out


@functools.cache
def default_as_of() -> datetime:
    """Today at 00:00 UTC, the demo warehouse's default as-of time; read once per process, so
    every sandbox of one process tells the same story."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def conversion_times(
    companies: Sequence[CompanyLike], seed: int, as_of: datetime
) -> dict[str, datetime]:
    """When each demo company bought, by lower-case domain: the demo warehouse's story for
    ``companies``, ``seed`` and ``as_of`` (its ``conversions`` table, purchases after ``as_of``
    included). Empty for companies that are not demo companies (no usage story to tell)."""
    if not all(hasattr(c, "profile") and hasattr(c, "team_size") for c in companies):
        return {}
    from connectors.demo_warehouse import demo_intents

    intents = demo_intents(list(companies), seed=seed, as_of=as_of)  # type: ignore[arg-type]
    return {i.domain.lower(): i.converted_at for i in intents if i.converted_at is not None}


def crm_deals(
    picture: Sequence[Mapping[str, Any]],
    conversions: Mapping[str, datetime],
    seed: int,
    as_of: datetime,
) -> list[dict[str, Any]]:
    """The deals the CRM holds as of ``as_of`` about ``picture`` (``crm_companies``'s).

    A primary account whose company bought (``conversions``) at or before ``as_of`` has a won
    deal closed then, sometimes an earlier lost one and a later won expansion; one that buys
    later has an open deal in a late stage, expected to close on that day. Other primary
    accounts sometimes have a lost or an open deal. Half the lead-only companies that bought
    have a won deal on no account. Keys: ``key``, ``company_key`` (None: no account),
    ``also_keys`` (subsidiaries' keys a HubSpot deal is associated with too), ``outcome``
    (``won``, ``lost``, ``open``), ``progress`` (0-1, how far an open deal got), ``close``,
    ``created``, ``modified``, ``amount``, ``name``, ``business`` (New or Existing Business).
    """
    rng = random.Random(f"crm-deals-{seed}")
    children: dict[str, list[str]] = {}
    for item in picture:
        if item.get("parent_key"):
            children.setdefault(str(item["parent_key"]), []).append(str(item["key"]))
    out: list[dict[str, Any]] = []

    def deal(item: Mapping[str, Any], outcome: str, close: datetime, **extra: Any) -> None:
        closed = outcome != DEAL_OPEN
        created = (close if closed else as_of) - timedelta(days=rng.uniform(14, 150))
        modified = min(close + timedelta(hours=rng.uniform(0, 48)), as_of) if closed else as_of
        size = int(item.get("employees") or 10)
        values: dict[str, Any] = {
            "key": f"deal-{len(out) + 1:05d}",
            "company_key": str(item["key"]) if item.get("has_account") else None,
            "also_keys": [],
            "outcome": outcome,
            "progress": 1.0 if closed else rng.random(),
            "close": close,
            "created": created,
            "modified": max(modified, created),
            "amount": float(round(max(size, 5) * rng.uniform(40, 120), -2) or 500),
            "name": f"{item['name']} - New Business",
            "business": "New Business",
        }
        values.update(extra)
        out.append(values)

    for item in picture:
        bought = conversions.get(str(item.get("domain") or "").lower())
        if item.get("kind") == "lead_only" and bought is not None and bought <= as_of:
            if rng.random() < 0.5:
                deal(item, DEAL_WON, bought)
            continue
        if item.get("kind") != "primary" or not item.get("has_account"):
            continue
        if bought is not None and bought <= as_of:
            if rng.random() < 0.25:
                deal(item, DEAL_LOST, bought - timedelta(days=rng.uniform(30, 200)))
            subsidiaries = children.get(str(item["key"]), [])
            deal(item, DEAL_WON, bought, also_keys=subsidiaries[:1] if rng.random() < 0.4 else [])
            later = bought + timedelta(days=rng.uniform(10, 120))
            if rng.random() < 0.2 and later <= as_of:
                deal(
                    item,
                    DEAL_WON,
                    later,
                    name=f"{item['name']} - Expansion",
                    business="Existing Business",
                )
        elif bought is not None:
            deal(item, DEAL_OPEN, bought, progress=0.85 + 0.15 * rng.random())
        else:
            u = rng.random()
            if u < 0.1:
                deal(item, DEAL_LOST, as_of - timedelta(days=rng.uniform(5, 300)))
            elif u < 0.22:
                deal(item, DEAL_OPEN, as_of + timedelta(days=rng.uniform(5, 90)))
    return out


def sf_stage(deal: Mapping[str, Any]) -> str:
    """The Salesforce ``StageName`` of a ``crm_deals`` deal."""
    if deal["outcome"] == DEAL_WON:
        return "Closed Won"
    if deal["outcome"] == DEAL_LOST:
        return "Closed Lost"
    index = min(int(deal["progress"] * len(SF_OPEN_STAGES)), len(SF_OPEN_STAGES) - 1)
    return SF_OPEN_STAGES[index]


def seed_salesforce(
    api: SalesforceApi,
    companies: Sequence[CompanyLike],
    seed: int,
    *,
    as_of: datetime | None = None,
) -> None:
    """Load the CRM picture of ``companies`` into the sandbox org: users, accounts, contacts,
    leads and, as of ``as_of`` (default ``default_as_of()``), opportunities (``crm_deals``).

    About 60% of accounts carry a ``LastActivityDate`` within the 180 days before the seed epoch.
    A ``bare`` org (no ``Domain__c``, none of pls-sync's fields) gets the same records without
    the values of the fields it lacks. Opportunities come last, with ids of their own: every
    other record is as it was before the org had opportunities.
    """
    for rep in owners():
        api.insert(
            "User",
            {
                "Id": rep["id"],
                "Username": rep["email"],
                "FirstName": rep["first_name"],
                "LastName": rep["last_name"],
                "Email": rep["email"],
                "Title": "Account Executive",
            },
            created=SEED_EPOCH - timedelta(days=1500),
        )
    rng = random.Random(f"crm-records-{seed}")
    # A stream of its own, so adding activity dates left every other seeded value unchanged.
    activity = random.Random(f"crm-activity-{seed}")
    account_ids: dict[str, str] = {}
    picture = crm_companies(companies, seed)
    for item in picture:
        owner = item["owner"]["id"]
        account_id = None
        if item["has_account"]:
            fields: dict[str, Any] = {
                "Name": item["name"][:255],
                "Website": item["website"],
                "Domain__c": item["domain_field"],
                "Industry": item["industry"],
                "NumberOfEmployees": item["employees"],
                "OwnerId": owner,
                "Type": "Prospect"
                if item["kind"] == "crm_only"
                else rng.choice(("Prospect", "Customer - Direct", "Customer - Direct", None)),
            }
            if activity.random() < 0.6:  # reps logged a call or meeting at some point
                fields["LastActivityDate"] = (
                    SEED_EPOCH - timedelta(days=activity.randint(0, 180))
                ).date()
            if item["parent_key"]:
                fields["ParentId"] = account_ids[item["parent_key"]]
            account_id = api.insert(
                "Account",
                _present(api, "Account", fields),
                created=item["created"],
                modified=item["last_modified"],
            )
            account_ids[item["key"]] = account_id
        for contact in item["contacts"]:
            api.insert(
                "Contact",
                {
                    "AccountId": account_id,
                    "FirstName": contact["first_name"],
                    "LastName": contact["last_name"],
                    "Email": contact["email"],
                    "Title": contact["title"],
                    "MQL__c": contact["mql"],
                    "OwnerId": owner,
                },
                created=_stamp(rng, 30, 600),
                modified=_stamp(rng, 0, 30),
            )
        for lead in item["leads"]:
            api.insert(
                "Lead",
                {
                    "FirstName": lead["first_name"],
                    "LastName": lead["last_name"],
                    "Company": item["name"][:255],
                    "Email": lead["email"],
                    "Title": lead["title"],
                    "Status": lead["status"],
                    "Website": item["website"],
                    "LeadSource": rng.choice(("Web", "Webinar", "Content Download", "Trade Show")),
                    "OwnerId": owner,
                },
                created=_stamp(rng, 10, 400),
                modified=_stamp(rng, 0, 10),
            )
    when = as_of or default_as_of()
    deals = crm_deals(picture, conversion_times(companies, seed, when), seed, when)
    _seed_opportunities(api, picture, deals, account_ids)


def _seed_opportunities(
    api: SalesforceApi,
    picture: Sequence[Mapping[str, Any]],
    deals: Sequence[Mapping[str, Any]],
    account_ids: Mapping[str, str],
) -> None:
    """The ``crm_deals`` as Opportunities, owned by their account's owner."""
    owner_by_key = {str(item["key"]): item["owner"]["id"] for item in picture}
    for number, deal in enumerate(deals, start=1):
        company_key = deal["company_key"]
        api.insert(
            "Opportunity",
            {
                "Id": make_id("006", number, pod=_SF_OPPORTUNITY_POD),
                "AccountId": account_ids.get(company_key) if company_key else None,
                "Name": deal["name"][:120],
                "StageName": sf_stage(deal),
                "CloseDate": deal["close"].date(),
                "Amount": deal["amount"],
                "Type": deal["business"],
                "OwnerId": owner_by_key.get(company_key or "") or owners()[0]["id"],
            },
            created=deal["created"],
            modified=deal["modified"],
        )


def _present(api: SalesforceApi, sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without those the org does not have (a bare org has no ``Domain__c``)."""
    spec = api.schema[sobject]
    return {name: value for name, value in fields.items() if spec.field(name) is not None}
