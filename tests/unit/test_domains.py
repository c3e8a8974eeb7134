"""Domain normalisation: registrable domains, email hosts, free-mail and disposable providers."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync import domains
from pls_sync.domains import (
    HostVerdict,
    classify_host,
    disposable_domains,
    email_host,
    free_mail_domains,
    is_disposable,
    is_free_mail,
    registrable_domain,
    split_domain_values,
)

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
    ],
)
def test_registrable_domain_rejects_junk(value: str) -> None:
    assert registrable_domain(value) is None


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
    assert len(disposable) >= 80
    assert not free & disposable
    for entry in free | disposable:
        assert entry == entry.strip().lower()
        assert "#" not in entry and " " not in entry
        # every entry must name something a host can actually have
        assert registrable_domain(entry) is not None, entry


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


def _tldextract_domain(host: str) -> str | None:
    parts = domains._extractor().extract_str(host)
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
    assert verdict.reason in (None, "invalid", "free_mail", "disposable")
    assert (verdict.domain is None) == (verdict.reason == "invalid")
