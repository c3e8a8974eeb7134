"""Realistic, messy CRM data derived from the demo companies, deterministic by seed.

``crm_companies`` decides what the CRM knows about each demo company, independent of any one
CRM: about three quarters have an account, with websites typed every way reps type them
(``acme.com``, ``www.acme.com``, ``https://acme.com/``, ``http://www.acme.com/en-us``,
``ACME.COM``), some with only a ``Domain__c``, some with neither; duplicate accounts on one
domain; subsidiaries under a parent; CRM-only accounts with no product usage; leads and
contacts, some marketing qualified. ``seed_salesforce`` loads that picture into the sandbox org.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from pls_sync.sandbox.salesforce import make_id

if TYPE_CHECKING:
    from pls_sync.sandbox.salesforce import SalesforceApi

SEED_EPOCH = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
ACCOUNT_SHARE = 0.75

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


def seed_salesforce(api: SalesforceApi, companies: Sequence[CompanyLike], seed: int) -> None:
    """Load the CRM picture of ``companies`` into the sandbox org: users, accounts, contacts, leads.

    About 60% of accounts carry a ``LastActivityDate`` within the 180 days before the seed epoch.
    A ``bare`` org (no ``Domain__c``, none of pls-sync's fields) gets the same records without
    the values of the fields it lacks.
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
    for item in crm_companies(companies, seed):
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


def _present(api: SalesforceApi, sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without those the org does not have (a bare org has no ``Domain__c``)."""
    spec = api.schema[sobject]
    return {name: value for name, value in fields.items() if spec.field(name) is not None}
