"""Domain normalisation: registrable domains, email hosts and the hosts that name no company."""

from __future__ import annotations

import functools
import string
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources

import pytest
import tldextract
from disposable_email_domains import blocklist
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync import domains
from pls_sync.domains import (
    HostVerdict,
    classify_host,
    company_domain,
    configure_host_lists,
    disposable_domains,
    email_host,
    free_mail_domains,
    is_disposable,
    is_free_mail,
    platform_host_names,
    registrable_domain,
    shared_hosting_suffixes,
    split_domain_values,
)

REASONS = (None, "invalid", "free_mail", "disposable", "platform_host", "shared_hosting")

PROPERTY = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # bare hosts and subdomains
        ("acme.com", "acme.com"),
        ("eng.acme.com", "acme.com"),
        ("a.b.c.eng.acme.com", "acme.com"),
        ("www.acme.com", "acme.com"),
        # multi-label public suffixes
        ("acme.co.uk", "acme.co.uk"),
        ("eng.acme.co.uk", "acme.co.uk"),
        ("www.acme.com.au", "acme.com.au"),
        ("shop.acme.co.jp", "acme.co.jp"),
        ("acme.com.br", "acme.com.br"),
        # PSL wildcard and exception rules
        ("a.b.kawasaki.jp", "a.b.kawasaki.jp"),
        ("x.city.kawasaki.jp", "city.kawasaki.jp"),
        ("www.ck", "www.ck"),
        # private suffixes are not company boundaries
        ("acme.github.io", "github.io"),
        # schemes, paths, queries, fragments, ports, user-info
        ("https://acme.com", "acme.com"),
        ("http://www.acme.com/", "acme.com"),
        ("https://WWW.Acme.com:8443/path?q", "acme.com"),
        ("ftp://files.acme.de/pub/", "acme.de"),
        ("//cdn.acme.io/x.js", "acme.io"),
        ("acme.com/about-us", "acme.com"),
        ("www.acme.com?ref=crm", "acme.com"),
        ("acme.com#top", "acme.com"),
        ("acme.com:8080", "acme.com"),
        ("https://user:secret@portal.acme.com/login", "acme.com"),
        # case, whitespace, trailing and leading dots
        ("ACME.COM", "acme.com"),
        ("  Acme.Com \t", "acme.com"),
        ("acme.com.", "acme.com"),
        ("www.acme.co.uk.", "acme.co.uk"),
        (".acme.com", "acme.com"),
        # emails
        ("john@acme.com", "acme.com"),
        ("John.Doe@Eng.Acme.CO.UK", "acme.co.uk"),
        ("mailto:sales@acme.com", "acme.com"),
        ("odd@name@acme.com", "acme.com"),
        # IDN -> punycode
        ("münchen.de", "xn--mnchen-3ya.de"),
        ("www.MÜNCHEN.de", "xn--mnchen-3ya.de"),
        ("https://münchen.de/stadt", "xn--mnchen-3ya.de"),
        ("jörg@bücher.de", "xn--bcher-kva.de"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
        ("acme。com", "acme.com"),
        ("acme．com", "acme.com"),
        ("acme｡com", "acme.com"),
        # IDNA 2008 / UTS #46: the sharp s is its own letter, not "ss" as in IDNA 2003
        ("faß.de", "xn--fa-hia.de"),
        ("https://www.FAẞ.de/kontakt", "xn--fa-hia.de"),
        ("xn--fa-hia.de", "xn--fa-hia.de"),
        ("straße.de", "xn--strae-oqa.de"),
        ("fass.de", "fass.de"),
        ("my_host.münchen.de", "xn--mnchen-3ya.de"),
        # underscores are tolerated in subdomain labels only
        ("my_host.acme.com", "acme.com"),
    ],
)
def test_registrable_domain(value: str, expected: str) -> None:
    assert registrable_domain(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "n/a",
        "N/A",
        "-",
        "none",
        "localhost",
        "localhost:8080",
        "http://localhost/",
        "1.2.3.4",
        "192.168.0.1:80",
        "http://10.0.0.1/admin",
        "::1",
        "[::1]",
        "http://[2001:db8::1]/",
        "co.uk",
        "com",
        "a.kawasaki.jp",
        "acme.notatld",
        "intranet.local",
        "acme .com",
        "acme..com",
        "-acme.com",
        "acme-.com",
        "acme!.com",
        "acme_corp.com",
        "acme.com:http",
        "https://",
        "@",
        "john@",
        "a" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "ü" * 70 + ".de",
        "☃.com",  # valid in IDNA 2003, a disallowed code point in IDNA 2008
    ],
)
def test_registrable_domain_rejects_junk(value: str) -> None:
    assert registrable_domain(value) is None


def test_idna_2008_spellings_of_one_domain_meet() -> None:
    unicode, punycode = classify_host("jörg@faß.de"), classify_host("xn--fa-hia.de")
    assert unicode == punycode == HostVerdict("xn--fa-hia.de", None)
    assert company_domain("https://faß.de/") == company_domain("www.xn--fa-hia.de")
    assert registrable_domain("faß.de") != registrable_domain("fass.de")


def test_registrable_domain_accepts_63_character_labels() -> None:
    label = "a" * 63
    assert registrable_domain(f"{label}.com") == f"{label}.com"


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("john@acme.com", "acme.com"),
        (" John@Eng.ACME.com ", "eng.acme.com"),
        ("a@b@acme.com", None),  # two @: invalid, as in the warehouse reader on every dialect
        ("jörg@münchen.de", "münchen.de"),
        ("user+tag@acme.io", "acme.io"),
        ("", None),
        ("   ", None),
        ("acme.com", None),
        ("@acme.com", None),
        ("john@", None),
        ("john doe@acme.com", None),
        ("john@acme .com", None),
    ],
)
def test_email_host(email: str, expected: str | None) -> None:
    assert email_host(email) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("acme.com", HostVerdict("acme.com", None)),
        ("eng.acme.co.uk", HostVerdict("acme.co.uk", None)),
        ("john@acme.com", HostVerdict("acme.com", None)),
        ("münchen.de", HostVerdict("xn--mnchen-3ya.de", None)),
        ("gmail.com", HostVerdict("gmail.com", "free_mail")),
        ("GMAIL.COM", HostVerdict("gmail.com", "free_mail")),
        ("googlemail.com", HostVerdict("googlemail.com", "free_mail")),
        ("yahoo.co.uk", HostVerdict("yahoo.co.uk", "free_mail")),
        ("uk.yahoo.com", HostVerdict("yahoo.com", "free_mail")),
        ("mail.ru", HostVerdict("mail.ru", "free_mail")),
        ("hotmail.fr", HostVerdict("hotmail.fr", "free_mail")),
        ("outlook.com", HostVerdict("outlook.com", "free_mail")),
        ("icloud.com", HostVerdict("icloud.com", "free_mail")),
        ("proton.me", HostVerdict("proton.me", "free_mail")),
        ("web.de", HostVerdict("web.de", "free_mail")),
        ("qq.com", HostVerdict("qq.com", "free_mail")),
        ("comcast.net", HostVerdict("comcast.net", "free_mail")),
        ("jane@gmail.com", HostVerdict("gmail.com", "free_mail")),
        ("mailinator.com", HostVerdict("mailinator.com", "disposable")),
        ("yopmail.com", HostVerdict("yopmail.com", "disposable")),
        ("guerrillamail.net", HostVerdict("guerrillamail.net", "disposable")),
        ("10minutemail.com", HostVerdict("10minutemail.com", "disposable")),
        # platforms where the path names the company, and shared hosting
        ("jobs.linkedin.com", HostVerdict("linkedin.com", "platform_host")),
        ("bob@linkedin.com", HostVerdict("linkedin.com", "platform_host")),
        ("acme.github.io", HostVerdict("github.io", "shared_hosting")),
        ("jane@acme.onmicrosoft.com", HostVerdict("onmicrosoft.com", "shared_hosting")),
        ("acme.com.linkedin.example.org", HostVerdict("example.org", None)),
        # listed by full host below a registrable domain that is not itself listed
        ("cool.fr.nf", HostVerdict("fr.nf", "disposable")),
        ("", HostVerdict(None, "invalid")),
        ("localhost", HostVerdict(None, "invalid")),
        ("10.0.0.1", HostVerdict(None, "invalid")),
        ("bad host.com", HostVerdict(None, "invalid")),
        ("co.uk", HostVerdict(None, "invalid")),
    ],
)
def test_classify_host(host: str, expected: HostVerdict) -> None:
    verdict = classify_host(host)
    assert verdict == expected
    assert verdict.usable is (expected.reason is None)


def test_company_domains_that_merely_contain_a_provider_name_are_usable() -> None:
    # "mail.com" is listed; a company's mail.acme.com host or gmail-like names are not.
    assert classify_host("mail.acme.com") == HostVerdict("acme.com", None)
    assert classify_host("notgmail.com") == HostVerdict("notgmail.com", None)
    assert classify_host("gmail.acme.com") == HostVerdict("acme.com", None)


@pytest.mark.parametrize(
    ("domain", "free", "disposable"),
    [
        ("gmail.com", True, False),
        ("mx.gmail.com", True, False),
        ("yahoo.com.br", True, False),
        ("yandex.ru", True, False),
        ("163.com", True, False),
        ("mailinator.com", False, True),
        ("trashmail.de", False, True),
        ("temp-mail.org", False, True),
        ("acme.com", False, False),
        ("not a domain", False, False),
        ("", False, False),
    ],
)
def test_is_free_mail_and_is_disposable(domain: str, free: bool, disposable: bool) -> None:
    assert is_free_mail(domain) is free
    assert is_disposable(domain) is disposable


def test_provider_lists_are_large_clean_and_disjoint() -> None:
    free, disposable = free_mail_domains(), disposable_domains()
    assert len(free) >= 120
    assert len(disposable) >= 10_000  # the maintained package list plus the project's own
    assert not free & disposable
    for entry in free | disposable | platform_host_names():
        assert entry == entry.strip().lower()
        assert "#" not in entry and " " not in entry
        # every entry must name something a host can actually have
        assert registrable_domain(entry) is not None, entry


# Well-known throw-away providers; with the old hand-kept list, 35 of these 46 passed as companies.
WELL_KNOWN_DISPOSABLE = [
    "mailinator.com",
    "guerrillamail.com",
    "10minutemail.com",
    "temp-mail.org",
    "yopmail.com",
    "trashmail.com",
    "sharklasers.com",
    "getnada.com",
    "maildrop.cc",
    "dispostable.com",
    "mailinator.org",
    "mailin8r.com",
    "sogetthis.com",
    "binkmail.com",
    "bobmail.info",
    "mailinater.com",
    "thisisnotmyrealemail.com",
    "veryrealemail.com",
    "zippymail.info",
    "tradermail.info",
    "safetymail.info",
    "reallymymail.com",
    "devnullmail.com",
    "letthemeatspam.com",
    "spamdecoy.net",
    "fakemailgenerator.com",
    "armyspy.com",
    "cuvox.de",
    "dayrep.com",
    "einrot.com",
    "gustr.com",
    "jourrapide.com",
    "rhyta.com",
    "superrito.com",
    "teleworm.us",
    "1secmail.com",
    "1secmail.net",
    "emailnator.com",
    "fexpost.com",
    "mailto.plus",
    "10minemail.com",
    "temporary-mail.net",
    "trash-me.com",
    "jetable.org",
    "inboxbear.com",
    "getairmail.com",
]


@pytest.mark.parametrize("domain", WELL_KNOWN_DISPOSABLE)
def test_well_known_disposable_providers_are_disposable(domain: str) -> None:
    assert classify_host(f"someone@{domain}") == HostVerdict(domain, "disposable")
    assert is_disposable(domain)


def test_project_disposable_additions_are_only_what_the_package_lacks() -> None:
    text = (resources.files("pls_sync") / "data" / "disposable.txt").read_text(encoding="utf-8")
    additions = [line.strip() for line in text.splitlines() if line.strip()[:1] not in ("", "#")]
    assert additions, "the file keeps the project's additions"
    assert not set(additions) & blocklist, "drop entries the maintained list now has"
    assert set(additions) | blocklist <= disposable_domains()


def test_the_disposable_package_is_loaded_on_first_use_not_at_import() -> None:
    script = (
        "import sys; import pls_sync.domains as d;"
        "assert 'disposable_email_domains' not in sys.modules;"
        "d.classify_host('acme.com'); assert 'disposable_email_domains' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


# --- platforms and shared hosting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # the path names the company: never the platform's domain
        (
            "https://www.linkedin.com/company/acme-corp",
            HostVerdict("linkedin.com", "platform_host"),
        ),
        ("linkedin.com/in/jane", HostVerdict("linkedin.com", "platform_host")),
        ("https://x.com/acme", HostVerdict("x.com", "platform_host")),
        ("http://twitter.com/acme", HostVerdict("twitter.com", "platform_host")),
        ("https://www.facebook.com/acme", HostVerdict("facebook.com", "platform_host")),
        ("https://github.com/acme", HostVerdict("github.com", "platform_host")),
        (
            "https://www.crunchbase.com/organization/acme",
            HostVerdict("crunchbase.com", "platform_host"),
        ),
        ("https://bit.ly/3xyz", HostVerdict("bit.ly", "platform_host")),
        ("lnkd.in/abc", HostVerdict("lnkd.in", "platform_host")),
        ("https://linktr.ee/acme", HostVerdict("linktr.ee", "platform_host")),
        ("https://apps.apple.com/us/app/acme/id1", HostVerdict("apple.com", "platform_host")),
        # a listed subdomain leaves the rest of its domain alone
        ("https://www.apple.com", HostVerdict("apple.com", None)),
        ("support.google.com", HostVerdict("google.com", None)),
        # shared hosting: each subdomain (or path) is another owner
        ("https://sites.google.com/view/gamma", HostVerdict("google.com", "shared_hosting")),
        ("gamma.github.io", HostVerdict("github.io", "shared_hosting")),
        ("https://gamma.github.io/site/", HostVerdict("github.io", "shared_hosting")),
        ("acme.herokuapp.com", HostVerdict("herokuapp.com", "shared_hosting")),
        ("https://acme.netlify.app", HostVerdict("netlify.app", "shared_hosting")),
        ("acme-web.vercel.app", HostVerdict("vercel.app", "shared_hosting")),
        ("https://jdoe.wixsite.com/acme", HostVerdict("wixsite.com", "shared_hosting")),
        ("acme.notion.site", HostVerdict("notion.site", "shared_hosting")),
        ("acme.blogspot.com", HostVerdict("blogspot.com", "shared_hosting")),
        ("https://acme.wordpress.com", HostVerdict("wordpress.com", "shared_hosting")),
        ("acme.zendesk.com", HostVerdict("zendesk.com", "shared_hosting")),
        ("ec2-1-2-3-4.compute-1.amazonaws.com", HostVerdict("amazonaws.com", "shared_hosting")),
        # the operator's own domain (a suffix that is itself a registrable domain) stays usable
        ("github.io", HostVerdict("github.io", None)),
        ("https://www.zendesk.com/pricing", HostVerdict("zendesk.com", None)),
        ("pythonanywhere.com", HostVerdict("pythonanywhere.com", None)),
        # the company's own domain, whatever the path says
        ("acme.com/linkedin", HostVerdict("acme.com", None)),
        ("https://acme.com/github.io", HostVerdict("acme.com", None)),
        ("eng.acme.co.uk", HostVerdict("acme.co.uk", None)),
        ("linkedin.acme.com", HostVerdict("acme.com", None)),
        ("acme-linkedin.com", HostVerdict("acme-linkedin.com", None)),
        # junk stays junk; free-mail providers are not refused for CRM values
        ("n/a", HostVerdict(None, "invalid")),
        ("gmail.com", HostVerdict("gmail.com", None)),
    ],
)
def test_company_domain(value: str, expected: HostVerdict) -> None:
    assert company_domain(value) == expected
    assert registrable_domain(value) == expected.domain  # registrable_domain keeps its meaning


def test_shared_hosting_covers_the_psl_private_section_and_the_project_additions() -> None:
    suffixes = shared_hosting_suffixes()
    for suffix in ("github.io", "herokuapp.com", "netlify.app", "wixsite.com", "notion.site"):
        assert suffix in suffixes
    assert "sites.google.com" in suffixes
    assert "github.com" not in suffixes and "google.com" not in suffixes


@functools.cache
def _psl_private_rules() -> frozenset[str]:
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    with_private = tldextract.TLDExtract(
        suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
    )
    return frozenset(rule.removeprefix("*.") for rule in set(with_private.tlds) - set(extract.tlds))


@pytest.mark.parametrize("name", ["platform_hosts.txt", "shared_hosting.txt"])
def test_host_list_files_are_clean(name: str) -> None:
    text = (resources.files("pls_sync") / "data" / name).read_text(encoding="utf-8")
    assert text.startswith("# "), "a header says what the file is for"
    entries = [line.split("#")[0].strip() for line in text.splitlines()]
    entries = [entry for entry in entries if entry]
    assert len(entries) == len(set(entries))
    private = _psl_private_rules()
    for entry in entries:
        assert entry == entry.lower() and entry.isascii() and " " not in entry, entry
        assert registrable_domain(entry) is not None, entry
        assert entry not in private, f"{entry} is in the PSL's private section already"
        assert not is_free_mail(entry), entry


@pytest.fixture
def restore_host_lists() -> Iterator[None]:
    yield
    configure_host_lists()


@pytest.mark.usefixtures("restore_host_lists")
def test_configure_host_lists_adds_entries_and_forgets_memoised_verdicts() -> None:
    assert company_domain("https://wiki.acme-cloud.net/acme") == HostVerdict("acme-cloud.net", None)
    assert classify_host("acme.mycrm.io").usable
    configure_host_lists(
        platform_hosts=["  WIKI.Acme-Cloud.NET. "],
        shared_hosting=["*.mycrm.io", "https://münchen.de/"],
    )
    assert company_domain("https://wiki.acme-cloud.net/acme").reason == "platform_host"
    assert company_domain("acme-cloud.net").usable  # only the listed host and below
    assert classify_host("acme.mycrm.io") == HostVerdict("mycrm.io", "shared_hosting")
    assert classify_host("mycrm.io").usable
    assert classify_host("stadt.münchen.de").reason == "shared_hosting"
    assert "wiki.acme-cloud.net" in platform_host_names()
    assert {"mycrm.io", "xn--mnchen-3ya.de"} <= shared_hosting_suffixes()
    assert "linkedin.com" in platform_host_names()  # the built-in list is kept

    configure_host_lists(shared_hosting=["other.io"])  # replaces the previous call's entries
    assert company_domain("https://wiki.acme-cloud.net/acme").usable
    assert classify_host("acme.mycrm.io").usable
    assert classify_host("x.other.io").reason == "shared_hosting"


@pytest.mark.usefixtures("restore_host_lists")
@pytest.mark.parametrize("entry", ["", "localhost", "co.uk", "10.0.0.1", "not a host"])
def test_configure_host_lists_rejects_entries_that_are_not_hosts(entry: str) -> None:
    configure_host_lists(platform_hosts=["acme-cloud.net"])
    with pytest.raises(ValueError, match="not a host name"):
        configure_host_lists(platform_hosts=["fine.com", entry])
    assert "acme-cloud.net" in platform_host_names()  # nothing changed


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, []),
        ("", []),
        ("  ", []),
        ("acme.com", ["acme.com"]),
        ("acme.com;acme.co.uk", ["acme.com", "acme.co.uk"]),
        (
            " acme.com ; acme.de ,acme.fr\nacme.io\tacme.ai ",
            ["acme.com", "acme.de", "acme.fr", "acme.io", "acme.ai"],
        ),
        (";;,", []),
        ("https://acme.com/a, https://acme.de/b", ["https://acme.com/a", "https://acme.de/b"]),
    ],
)
def test_split_domain_values(raw: str | None, expected: list[str]) -> None:
    assert split_domain_values(raw) == expected


# --- properties -------------------------------------------------------------------------------

_LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z", fullmatch=True)
_RULES = domains._suffix_rules()
_SUFFIXES = st.one_of(
    st.sampled_from(sorted(_RULES.exact)),
    st.sampled_from(sorted(_RULES.exception)),
    st.builds(
        lambda label, base: f"{label}.{base}", _LABEL, st.sampled_from(sorted(_RULES.wildcard))
    ),
    st.sampled_from(["com", "co.uk", "com.au", "co.jp", "de", "io", "notatld", "local"]),
)
_HOSTS = st.builds(
    lambda labels, suffix: ".".join([*labels, suffix]),
    st.lists(_LABEL, min_size=0, max_size=3),
    _SUFFIXES,
)


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _tldextract_domain(host: str) -> str | None:
    parts = _extractor().extract_str(host)
    return f"{parts.domain}.{parts.suffix}" if parts.domain and parts.suffix else None


@PROPERTY
@given(_HOSTS)
def test_lookup_agrees_with_tldextract(host: str) -> None:
    assert registrable_domain(host) == _tldextract_domain(host)


@PROPERTY
@given(_HOSTS)
def test_registrable_domain_is_idempotent(host: str) -> None:
    domain = registrable_domain(host)
    if domain is not None:
        assert registrable_domain(domain) == domain


@PROPERTY
@given(_HOSTS, st.lists(_LABEL, min_size=1, max_size=3))
def test_subdomains_never_change_the_result(host: str, subdomains: list[str]) -> None:
    domain = registrable_domain(host)
    if domain is not None:
        assert registrable_domain(".".join([*subdomains, host])) == domain


@PROPERTY
@given(_HOSTS, st.sampled_from(["https://", "http://", "HTTP://user:pw@", "x@", "//", "mailto:a@"]))
def test_url_and_email_decoration_never_changes_the_result(host: str, prefix: str) -> None:
    decorated = f"  {prefix}{host.upper()}.:8443/Path?q=1#frag "
    assert registrable_domain(decorated) == registrable_domain(host)


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=string.ascii_letters + string.digits + ".-_@:/ üß。", max_size=40),
    )
)
def test_result_is_lower_case_ascii_or_none(value: str) -> None:
    domain = registrable_domain(value)
    assert domain is None or (domain.isascii() and domain == domain.lower() and "." in domain)
    verdict = classify_host(value)
    assert verdict.reason in REASONS
    assert (verdict.domain is None) == (verdict.reason == "invalid")
    company = company_domain(value)
    assert company.domain == domain
    assert company.reason in (None, "invalid", "platform_host", "shared_hosting")


_LISTED = st.one_of(
    st.sampled_from(sorted(platform_host_names())),
    st.sampled_from(sorted(shared_hosting_suffixes())),
)


@PROPERTY
@given(st.lists(_LABEL.filter(lambda label: label != "www"), min_size=1, max_size=2), _LISTED)
def test_every_host_under_a_listed_one_is_refused(labels: list[str], listed: str) -> None:
    host = ".".join([*labels, listed])
    verdict = company_domain(f"https://{host}/about")
    assert verdict.reason in ("platform_host", "shared_hosting")
    assert verdict.domain == registrable_domain(host) == registrable_domain(listed)
    assert classify_host(f"someone@{host}").reason in REASONS[2:]
