"""End to end through the CLI: what pls-sync reads names the right company (issue 12, cases 5-10).

Each test changes the demo warehouse (DuckDB) and the sandbox CRM the way the world does (a
Website pasted from LinkedIn, an international domain, a custom model with missing data, free-mail
members in a company workspace, throw-away sign-ups), runs ``pls-sync`` in-process and asserts
what a user sees: the run summary, the CRM's fields, the export and the lists.

Multi-select values (case 6): Salesforce's API returns a multi-select picklist's values
``;``-separated "in their created order via Setup" (knowledge article 000231088,
https://help.salesforce.com/apex/HTViewSolution?id=000231088), whatever order was written; the
sandbox keeps what it is sent, so the test puts the values in that order itself. HubSpot takes
"'value1;value2;value5'" for multiple checkboxes
(https://developers.hubspot.com/docs/faq/how-do-i-set-multiple-values-for-checkbox-properties)
but every HubSpot enumeration is restricted to its options, and signals are free text: the
schema check refuses that mapping, so case 6 is a Salesforce case.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from pls_sync.domains import is_free_mail, registrable_domain, split_domain_values
from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import Workdir, copy_config

SF_ACCOUNT_FIELDS = (
    "PQA_Score__c",
    "PQA_Tier__c",
    "PQA_Signals__c",
    "PQA_Active_Users__c",
    "PQA_Lead_Channel__c",
    "PQA_Motion__c",
)
HS_COMPANY_FIELDS = ("pqa_score", "pqa_tier", "pqa_signals", "pqa_lead_channel", "pqa_motion")
# Throw-away providers: the first four were on the old hand-kept list, the rest were not.
DISPOSABLE = (
    "mailinator.com",
    "guerrillamail.com",
    "yopmail.com",
    "10minutemail.com",
    "sogetthis.com",
    "armyspy.com",
    "dayrep.com",
    "1secmail.com",
    "mailto.plus",
    "getairmail.com",
)


@dataclass(frozen=True, slots=True)
class Company:
    """A demo company with users in the warehouse and exactly one record in each CRM."""

    domain: str
    users: int
    sf_id: str
    hs_id: str


# --------------------------------------------------------------------------- warehouse


def _host(email: Any) -> str | None:
    if not isinstance(email, str) or email.count("@") != 1:
        return None
    return email.strip().rpartition("@")[2].lower() or None


def users_by_domain(workdir: Workdir) -> dict[str, list[int]]:
    """User ids by the registrable domain of their email."""
    import duckdb

    with duckdb.connect(str(workdir.warehouse), read_only=True) as db:
        rows = db.execute("SELECT user_id, email FROM users").fetchall()
    found: dict[str, list[int]] = defaultdict(list)
    for user_id, email in rows:
        host = _host(email)
        domain = registrable_domain(host) if host else None
        if domain:
            found[domain].append(int(user_id))
    return found


def move_users(workdir: Workdir, user_ids: Sequence[int], host: str) -> None:
    """Give these users an address at ``host`` (their local part kept)."""
    import duckdb

    with duckdb.connect(str(workdir.warehouse)) as db:
        db.executemany(
            "UPDATE users SET email = split_part(email, '@', 1) || '@' || ? WHERE user_id = ?",
            [(host, user_id) for user_id in user_ids],
        )


def add_members(workdir: Workdir, emails: Iterable[str], workspace_id: int | None) -> None:
    """New users (each in its own workspace when ``workspace_id`` is None), each with a copy of
    the events of the busiest user in the warehouse, so that each would count if it counted."""
    import duckdb

    with duckdb.connect(str(workdir.warehouse)) as db:
        busiest = db.execute(
            "SELECT user_id FROM events GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1"
        ).fetchone()
        top = db.execute("SELECT max(user_id), max(workspace_id) FROM users").fetchone()
        assert busiest is not None and top is not None
        next_user, next_workspace = int(top[0]) + 1, int(top[1]) + 1
        for email in emails:
            workspace = next_workspace if workspace_id is None else workspace_id
            next_workspace += workspace_id is None
            db.execute(
                "INSERT INTO users (user_id, email, workspace_id, created_at, is_admin) "
                "SELECT ?, ?, ?, min(occurred_at), false FROM events WHERE user_id = ?",
                [next_user, email, workspace, busiest[0]],
            )
            db.execute(
                "INSERT INTO events (user_id, workspace_id, event_name, occurred_at) "
                "SELECT ?, ?, event_name, occurred_at FROM events WHERE user_id = ?",
                [next_user, workspace, busiest[0]],
            )
            next_user += 1


# --------------------------------------------------------------------------- CRM


def _domains(values: Iterable[Any]) -> set[str]:
    return {
        domain
        for value in values
        if isinstance(value, str)
        for piece in split_domain_values(value)
        if (domain := registrable_domain(piece))
    }


def single_record_companies(workdir: Workdir, crm: Sandbox) -> list[Company]:
    """Demo companies with exactly one Salesforce Account and one HubSpot company, most users
    first (free-mail domains left out)."""
    sf: dict[str, list[str]] = defaultdict(list)
    for record_id, record in crm.salesforce.records["Account"].items():
        for domain in _domains((record.get("Website"), record.get("Domain__c"))):
            sf[domain].append(record_id)
    hs: dict[str, list[str]] = defaultdict(list)
    for company_id in crm.hubspot.ids():
        company = crm.hubspot.company(company_id)
        for domain in _domains((company.get("domain"), company.get("hs_additional_domains"))):
            hs[domain].append(company_id)
    users = users_by_domain(workdir)
    ranked = sorted(users, key=lambda d: (-len(users[d]), d))
    return [
        Company(domain, len(users[domain]), sf[domain][0], hs[domain][0])
        for domain in ranked
        if len(sf[domain]) == 1 and len(hs[domain]) == 1 and not is_free_mail(domain)
    ]


def set_domains(crm: Sandbox, company: Company, website: str, hubspot_domain: str) -> None:
    """A person edits the records' domain fields through the public APIs."""
    answers = [
        requests.patch(
            f"{crm.url}/services/data/v59.0/sobjects/Account/{company.sf_id}",
            json={"Website": website, "Domain__c": None},
            headers={"Authorization": f"Bearer {crm.session_id}"},
            timeout=10,
        ),
        requests.patch(
            f"{crm.url}/crm/v3/objects/companies/{company.hs_id}",
            json={"properties": {"domain": hubspot_domain, "hs_additional_domains": ""}},
            headers={"Authorization": f"Bearer {crm.hubspot_token}"},
            timeout=10,
        ),
    ]
    assert [a.status_code for a in answers] == [204, 200], [a.text for a in answers]


# --------------------------------------------------------------------------- CLI


def export(
    workdir: Workdir, name: str, *flags: str, config: Path | None = None
) -> list[dict[str, str]]:
    """``pls-sync export <name>`` at the demo's as-of, parsed."""
    extra = {"config": config} if config is not None else {}
    result = workdir.invoke("export", name, "--as-of", workdir.as_of_arg, *flags, **extra)
    assert result.exit_code == 0, result.output
    with (workdir.root / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def signal_labels(row: dict[str, str]) -> list[str]:
    """The signal labels of an export row (the export joins them with ``"; "``)."""
    return [label for label in row["signals"].split("; ") if label]


def edit(config: Path, relative: str, old: str, new: str) -> None:
    """Replace ``old`` (found exactly once) by ``new`` in a file of the config copy."""
    target = config.parent.parent / relative
    text = target.read_text(encoding="utf-8")
    assert text.count(old) == 1, (relative, old)
    target.write_text(text.replace(old, new), encoding="utf-8")


def pqa_values(crm: Sandbox, company: Company) -> dict[str, Any]:
    """The PQA fields of the company's Salesforce Account and HubSpot company that hold a value."""
    account = crm.salesforce.get("Account", company.sf_id) or {}
    hubspot = crm.hubspot.company(company.hs_id)
    values = {name: account.get(name) for name in SF_ACCOUNT_FIELDS}
    values.update({name: hubspot.get(name) for name in HS_COMPANY_FIELDS})
    return {name: value for name, value in values.items() if value not in (None, "")}


# --------------------------------------------------------------------------- case 5


def test_platform_and_shared_hosting_urls_never_match(workdir: Workdir, crm: Sandbox) -> None:
    acme, gamma = single_record_companies(workdir, crm)[:2]
    users = users_by_domain(workdir)
    # Acme's Website is its LinkedIn page, Gamma's a Google Sites page; the product has users
    # at linkedin.com and sites.google.com (before the fix: the companies linkedin.com and
    # google.com, matched to Acme and Gamma).
    set_domains(
        crm, acme, "https://www.linkedin.com/company/acme-corp", "linkedin.com/company/acme"
    )
    set_domains(crm, gamma, "https://sites.google.com/view/gamma", "sites.google.com/view/gamma")
    move_users(workdir, users[acme.domain], "linkedin.com")
    move_users(workdir, users[gamma.domain], "sites.google.com")

    result, summary = workdir.sync("run", summary="s.json")

    assert result.exit_code == 0, result.output
    assert "CRM domains naming no company" in result.output  # the summary table says so
    # Nobody's score was written onto either company's records.
    assert pqa_values(crm, acme) == {} and pqa_values(crm, gamma) == {}
    skipped = summary["warehouse"]["skipped_reasons"]
    assert skipped.get("platform_host") == acme.users
    assert skipped.get("shared_hosting") == gamma.users
    for name in ("salesforce", "hubspot"):
        destination = summary["destinations"][name]
        assert destination["match"]["crm_refused_platform_host"] >= 1, name
        assert destination["match"]["crm_refused_shared_hosting"] >= 1, name
        unmatched = {row["domain"] for row in destination["top_unmatched"]}
        assert not unmatched & {"linkedin.com", "google.com"}
    accounts = {row["account"] for row in export(workdir, "accounts.csv")}
    assert not accounts & {"linkedin.com", "google.com", acme.domain, gamma.domain}


# --------------------------------------------------------------------------- case 6


def make_multi_select(crm: Sandbox, field: str, options: Sequence[str]) -> None:
    """An admin changes an Account field's type to an unrestricted multi-select picklist with
    these options, in this order (Setup's "Change Field Type")."""
    response = requests.post(
        f"{crm.url}/__sandbox/salesforce/schema",
        json={
            "object": "Account",
            "field": field,
            "type": "multipicklist",
            "picklist": list(options),
            "restricted": False,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_a_multi_select_target_is_written_once_then_left_alone(
    workdir: Workdir, crm: Sandbox
) -> None:
    fired = {row["account"]: signal_labels(row) for row in export(workdir, "accounts.csv")}
    # Defined in reverse alphabetical order: neither the order signals fire in nor sorted.
    options = sorted({label for labels in fired.values() for label in labels}, reverse=True)
    make_multi_select(crm, "PQA_Signals__c", options)
    salesforce = ("--destination", "salesforce", "--full-refresh")

    first, s1 = workdir.sync("run", *salesforce, summary="s1.json")
    held = {
        record_id: record["PQA_Signals__c"]
        for record_id, record in crm.salesforce.records["Account"].items()
        if record.get("PQA_Signals__c")
    }
    several = sum(1 for value in held.values() if ";" in value)
    crm.reset_counts()
    second, s2 = workdir.sync("run", *salesforce, summary="s2.json")

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert s1["destinations"]["salesforce"]["field_changes"]["PQA_Signals__c"] > 0
    assert several > 0  # accounts with two signals or more: the values that were rewritten
    # The rerun reads every record (a full read) and writes nothing.
    assert s2["destinations"]["salesforce"]["records_changed"] == 0
    assert s2["destinations"]["salesforce"]["api_calls"]["write"] == 0
    # Salesforce keeps the options ';'-joined in their definition order, not as written
    # (pls-sync sends them sorted): what it returns is what the rerun compared with.
    order = {option: position for position, option in enumerate(options)}
    for value in held.values():
        parts = value.split(";")
        assert parts == sorted(parts, key=order.__getitem__), value


# --------------------------------------------------------------------------- case 7


def test_international_domains_meet_in_idna_2008(workdir: Workdir, crm: Sandbox) -> None:
    fass, buss = single_record_companies(workdir, crm)[:2]
    users = users_by_domain(workdir)
    # Product users write faß.de in Unicode, the CRM holds its IDNA 2008 punycode; and the
    # reverse for buß.de. IDNA 2003 maps ß to ss: fass.de and buss.de, other registered domains.
    move_users(workdir, users[fass.domain], "faß.de")
    set_domains(crm, fass, "https://xn--fa-hia.de", "xn--fa-hia.de")
    move_users(workdir, users[buss.domain], "xn--bu-hia.de")
    set_domains(crm, buss, "https://www.buß.de/", "buß.de")

    rows = {row["account"]: row for row in export(workdir, "accounts.csv", "--with-crm")}

    unicode, punycode = rows.get("xn--fa-hia.de"), rows.get("xn--bu-hia.de")
    assert unicode is not None and punycode is not None, sorted(rows)
    assert (unicode["salesforce_id"], unicode["hubspot_id"]) == (fass.sf_id, fass.hs_id)
    assert (punycode["salesforce_id"], punycode["hubspot_id"]) == (buss.sf_id, buss.hs_id)
    assert int(unicode["active_users_28d"]) > 0 and int(punycode["active_users_28d"]) > 0
    named = {value for row in rows.values() for value in (row["account"], row["domain"])}
    assert not named & {"fass.de", "buss.de"}


# --------------------------------------------------------------------------- case 8

METRICS = (
    "active_users_28d",
    "events_28d",
    "new_users_7d",
    "usual_weekly_new_users",
    "events_7d",
    "usual_weekly_events",
    "core_features_28d",
    "legal_page_views_14d",
    "pricing_page_views_14d",
    "enterprise_features_28d",
    "admin_changes_28d",
)
# Two accounts alike but for two metrics: NULL (the warehouse does not know) at one, 0 at the other.
MODEL = """-- one row per account; admin_changes_28d and pricing_page_views_14d unknown at nulls.io
SELECT * FROM (VALUES
    ('nulls.io', 6, 800, 1, 1, 150, 150, 3, NULL, NULL, 0, NULL),
    ('zeros.io', 6, 800, 1, 1, 150, 150, 3, 0, 0, 0, 0)
) AS t(domain, {columns})
"""
ABSENCE_SIGNALS = """
  - name: no_admin_yet
    when: {metric: admin_changes_28d, op: "==", value: 0}
    points: 6
    label: "No admin change in 28 days"
  - name: pricing_unseen
    when: {metric: pricing_page_views_14d, op: "<", value: 1}
    points: 4
    label: "Has not looked at pricing"
"""


def test_a_null_metric_of_a_custom_model_fires_no_condition(workdir: Workdir) -> None:
    config = copy_config(workdir.root)
    (config.parent / "models").mkdir()
    (config.parent / "models" / "accounts.sql").write_text(
        MODEL.format(columns=", ".join(METRICS)), encoding="utf-8"
    )
    edit(config, "config/pls_sync.yaml", "  model: builtin ", "  model: models/accounts.sql ")
    edit(config, "config/scoring.yaml", "\ntiers:\n", f"{ABSENCE_SIGNALS}\ntiers:\n")

    rows = {row["account"]: row for row in export(workdir, "accounts.csv", config=config)}

    nulls, zeros = rows["nulls.io"], rows["zeros.io"]
    assert signal_labels(zeros) == ["No admin change in 28 days", "Has not looked at pricing"]
    assert signal_labels(nulls) == []  # unknown is neither 0 nor below 1
    # The account still scores on what is known: the same points, without the two signals.
    assert int(nulls["score"]) > 0
    assert int(zeros["score"]) == int(nulls["score"]) + 10


# --------------------------------------------------------------------------- case 9


def company_workspace(workdir: Workdir) -> int:
    """The largest workspace whose members all have addresses at one company host."""
    import duckdb

    with duckdb.connect(str(workdir.warehouse), read_only=True) as db:
        rows = db.execute(
            "SELECT workspace_id, min(lower(split_part(email, '@', 2))) AS host FROM users "
            "WHERE workspace_id IS NOT NULL GROUP BY workspace_id "
            "HAVING count(DISTINCT lower(split_part(email, '@', 2))) = 1 "
            "ORDER BY count(*) DESC, workspace_id"
        ).fetchall()
    return next(int(ws) for ws, host in rows if host and not is_free_mail(host))


def test_free_mail_and_disposable_members_leave_a_workspace_as_it_was(
    workdir: Workdir, crm: Sandbox
) -> None:
    config = copy_config(workdir.root)
    edit(config, "config/pls_sync.yaml", "account_level: company ", "account_level: workspace ")
    workspace = company_workspace(workdir)
    key = f"workspace:{workspace}"
    plan = ("plan", "--destination", "salesforce")
    planned, before = workdir.sync(*plan, summary="before.json", config=config)
    assert planned.exit_code == 0, planned.output
    exported = {row["account"]: row for row in export(workdir, "before.csv", config=config)}
    # A consultant on gmail, a freelancer on outlook and two throw-away sign-ups join, and use
    # the product as much as anyone.
    free_mail = ["sam.consultant@gmail.com", "alex.freelance@outlook.com"]
    disposable = ["trial1@mailinator.com", "x9@yopmail.com"]
    add_members(workdir, free_mail + disposable, workspace)

    result, after = workdir.sync(*plan, summary="after.json", config=config)
    rows = {row["account"]: row for row in export(workdir, "after.csv", config=config)}

    assert result.exit_code == 0, result.output
    assert rows[key] == exported[key]  # score, points, signals, active users, buyers: unchanged
    assert set(rows) == set(exported)
    skipped_before = Counter(before["warehouse"]["skipped_reasons"])
    skipped_after = Counter(after["warehouse"]["skipped_reasons"])
    assert skipped_after - skipped_before == Counter(free_mail=2, disposable=2)
    assert after["warehouse"]["skipped_users"] == before["warehouse"]["skipped_users"] + 4


# --------------------------------------------------------------------------- case 10


def test_disposable_sign_ups_are_skipped_and_never_listed_unmatched(
    workdir: Workdir, crm: Sandbox
) -> None:
    # Two heavy users at each throw-away provider: before the fix, most formed "companies" that
    # no CRM knows, at the top of marketing's unmatched list.
    add_members(workdir, [f"{who}@{d}" for d in DISPOSABLE for who in ("a.b", "c.d")], None)

    result, summary = workdir.sync("run", "--destination", "salesforce", summary="s.json")
    listed = workdir.invoke("lists", "unmatched", "--format", "json")

    assert result.exit_code == 0, result.output
    assert listed.exit_code == 0, listed.output
    unmatched = json.loads(listed.stdout)["rows"]
    assert unmatched  # the list itself is there
    names = {value for row in unmatched for value in (row["domain"], row["account"])}
    assert sorted(names & set(DISPOSABLE)) == []
    assert summary["warehouse"]["skipped_reasons"]["disposable"] >= 2 * len(DISPOSABLE)
    accounts = {row["account"] for row in export(workdir, "accounts.csv")}
    assert sorted(accounts & set(DISPOSABLE)) == []
