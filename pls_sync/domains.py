"""Email and CRM domain normalisation: registrable domains and the hosts that name no company.

Everything here turns a messy string (an email, a URL, a bare host, a CRM Website field) into the
lower-case punycode *registrable domain* (eTLD+1) that identifies a company, or ``None``, and says
why a host cannot stand for a company: free-mail and disposable providers, platforms where the
path names the company (``linkedin.com/company/acme``) and shared hosting where every subdomain
has another owner (``acme.github.io``).

Internationalised names follow IDNA 2008 / UTS #46 (non-transitional, the ``idna`` package):
``faß.de`` is ``xn--fa-hia.de``, not the IDNA 2003 ``fass.de`` (another registered domain).

This is the one domain-core module allowed non-standard-library imports: ``tldextract``, ``idna``
and, lazily, ``disposable_email_domains``. The Public Suffix List is the snapshot bundled inside
``tldextract``, read as pure data and split into its ICANN and PRIVATE sections by tldextract's own
parser: no network, no cache directory. The registrable domain uses the ICANN section only; the
lookup is the PSL algorithm over punycode rule sets built once, because it runs once per distinct
CRM value and is several times faster than ``TLDExtract.extract_str`` (100k CRM records are
indexed per run); tests check it agrees with tldextract. The PRIVATE section (``github.io``,
``herokuapp.com``...) lists the shared-hosting suffixes.

The project's own lists live in ``pls_sync/data/*.txt`` (one host a line, ``#`` comments allowed)
and are read once with :mod:`importlib.resources`; :func:`configure_host_lists` adds a user's.
"""

from __future__ import annotations

import functools
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import idna
from tldextract.suffix_list import extract_tlds_from_suffix_list

__all__ = [
    "REASON_DISPOSABLE",
    "REASON_FREE_MAIL",
    "REASON_INVALID",
    "REASON_PLATFORM_HOST",
    "REASON_SHARED_HOSTING",
    "HostVerdict",
    "classify_host",
    "company_domain",
    "configure_host_lists",
    "disposable_domains",
    "email_host",
    "free_mail_domains",
    "host_list_entry",
    "is_disposable",
    "is_free_mail",
    "platform_host_names",
    "registrable_domain",
    "shared_hosting_suffixes",
    "split_domain_values",
]

REASON_INVALID = "invalid"
REASON_FREE_MAIL = "free_mail"
REASON_DISPOSABLE = "disposable"
REASON_PLATFORM_HOST = "platform_host"
REASON_SHARED_HOSTING = "shared_hosting"

_CACHE_SIZE = 200_000
_MAX_HOST = 253

# Subdomain labels in the wild carry underscores (DNS allows them, host names do not).
_ANY_LABEL = r"[a-z0-9_](?:[a-z0-9_\-]{0,61}[a-z0-9_])?"
_ASCII_HOST = re.compile(rf"(?:{_ANY_LABEL}\.)*{_ANY_LABEL}\Z")
# The host of an email, URL or bare host: an optional scheme (or "mailto:"), optional user-info
# or email local part up to the last '@' before any path, the host, an optional numeric port,
# then a path, query, fragment or the end. Brackets (IPv6) and whitespace in the host fail.
_PREFIX = r"(?:[a-z][a-z0-9+.\-]*://|//|mailto:)?(?:[^/?#]*@)?"
_SUFFIX = r"(?::[0-9]+)?(?:[/?#]|\Z)"
_HOST_IN_VALUE = re.compile(rf"{_PREFIX}([^/?#:@\[\]\s]*){_SUFFIX}")
# The same for the common case of a valid ascii host, checked in the same pass.
_ASCII_HOST_IN_VALUE = re.compile(rf"{_PREFIX}\.*((?:{_ANY_LABEL}\.)*{_ANY_LABEL})\.*{_SUFFIX}")
_WHITESPACE = re.compile(r"\s")

# Entries added by configure_host_lists, by reason; the built-in lists are never changed.
_configured: dict[str, frozenset[str]] = {}


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """Whether a host (of an email, a URL, a CRM domain field) identifies a company.

    ``domain`` is the registrable domain when one could be computed (also for refused hosts, so
    callers can report them); ``reason`` is ``None`` when the host is usable, else one of
    ``"invalid"``, ``"free_mail"``, ``"disposable"``, ``"platform_host"``, ``"shared_hosting"``.
    """

    domain: str | None
    reason: str | None

    @property
    def usable(self) -> bool:
        """True when the host names a company domain."""
        return self.reason is None


@functools.cache
def _psl_sections() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ICANN rules, PRIVATE rules) of the Public Suffix List snapshot bundled in tldextract."""
    data = pkgutil.get_data("tldextract", ".tld_set_snapshot")
    if data is None:  # pragma: no cover - the tldextract wheel always ships it
        raise RuntimeError("tldextract's bundled Public Suffix List snapshot is missing")
    icann, private = extract_tlds_from_suffix_list(data.decode("utf-8"))
    return tuple(icann), tuple(private)


@dataclass(frozen=True, slots=True)
class _SuffixRules:
    exact: frozenset[str]
    wildcard: frozenset[str]  # "*.ck" is stored as "ck"
    exception: frozenset[str]  # "!www.ck" is stored as "www.ck"
    flat: frozenset[str]  # top-level suffixes with no rule below them: "com", "io", "de"...


@functools.cache
def _suffix_rules() -> _SuffixRules:
    exact: set[str] = set()
    wildcard: set[str] = set()
    exception: set[str] = set()
    for rule in _psl_sections()[0]:
        target = exact
        if rule.startswith("!"):
            target, rule = exception, rule[1:]
        elif rule.startswith("*."):
            target, rule = wildcard, rule[2:]
        # The list spells IDN suffixes in Unicode; hosts here are punycode.
        encoded = rule if rule.isascii() else _idna_to_ascii(rule)
        if encoded is not None:  # a rule IDNA 2008 cannot encode matches no host here
            target.add(encoded)
    nested = {rule.rpartition(".")[2] for rule in exact | wildcard | exception if "." in rule}
    flat = {rule for rule in exact if "." not in rule} - nested - wildcard
    return _SuffixRules(
        frozenset(exact), frozenset(wildcard), frozenset(exception), frozenset(flat)
    )


def _registrable(host: str) -> str | None:
    """eTLD+1 of an ascii host, by the PSL algorithm; None when it has none."""
    rules = _suffix_rules()
    head, _, top = host.rpartition(".")
    if top in rules.flat:  # the common case, decided without walking the labels
        return f"{head.rpartition('.')[2]}.{top}" if head else None
    start, previous = 0, -1
    # Longest candidate first, so the first rule that applies is the prevailing one.
    while True:
        candidate = host[start:]
        if candidate in rules.exception:
            return candidate
        dot = host.find(".", start)
        if candidate in rules.exact or (dot >= 0 and host[dot + 1 :] in rules.wildcard):
            return host[previous:] if previous >= 0 else None
        if dot < 0:
            return None
        start, previous = dot + 1, start


def _list_entry(line: str) -> str | None:
    """One line of a data file as hosts are compared (lower-case punycode), or None if blank."""
    entry = line.split("#", 1)[0].strip().lower().rstrip(".")
    if not entry or entry.isascii():
        return entry or None
    return _idna_to_ascii(entry)


def _load_list(name: str) -> frozenset[str]:
    text = (resources.files("pls_sync") / "data" / name).read_text(encoding="utf-8")
    return frozenset(entry for line in text.splitlines() if (entry := _list_entry(line)))


@functools.cache
def free_mail_domains() -> frozenset[str]:
    """The free-mail provider domains from ``data/free_mail.txt``."""
    return _load_list("free_mail.txt")


@functools.cache
def disposable_domains() -> frozenset[str]:
    """Disposable-address provider domains: a maintained list plus the project's additions.

    The ``disposable-email-domains`` package's ``blocklist`` (about 10,000 domains, updated
    monthly; imported on first use, not with this module) and ``data/disposable.txt``.
    """
    from disposable_email_domains import blocklist

    return frozenset(blocklist) | _load_list("disposable.txt")


@functools.cache
def platform_host_names() -> frozenset[str]:
    """Hosts where the path, not the host, names the company: ``linkedin.com``, ``bit.ly``...

    ``data/platform_hosts.txt`` plus entries from :func:`configure_host_lists`. The host itself
    and every host under it are refused.
    """
    return _load_list("platform_hosts.txt") | _configured.get(REASON_PLATFORM_HOST, frozenset())


@functools.cache
def shared_hosting_suffixes() -> frozenset[str]:
    """Shared-hosting suffixes, where each subdomain has a different owner (``github.io``).

    The Public Suffix List's PRIVATE section (a wildcard ``*.x`` counts as ``x``; its few
    exception rules are left out), ``data/shared_hosting.txt`` for what the PSL lacks
    (``sites.google.com``) and entries from :func:`configure_host_lists`.
    """
    suffixes = set(_load_list("shared_hosting.txt"))
    for rule in _psl_sections()[1]:
        if rule.startswith("!"):
            continue
        rule = rule.removeprefix("*.")
        encoded = rule if rule.isascii() else _idna_to_ascii(rule)
        if encoded is not None:
            suffixes.add(encoded)
    return frozenset(suffixes) | _configured.get(REASON_SHARED_HOSTING, frozenset())


@dataclass(frozen=True, slots=True)
class _SharedHosting:
    suffixes: frozenset[str]
    domains: frozenset[str]  # their registrable domains: one lookup rules most hosts out


@functools.cache
def _shared_hosting() -> _SharedHosting:
    suffixes = shared_hosting_suffixes()
    domains = {domain for suffix in suffixes if (domain := _registrable(suffix))}
    return _SharedHosting(suffixes, frozenset(domains))


def configure_host_lists(
    platform_hosts: Iterable[str] = (), shared_hosting: Iterable[str] = ()
) -> None:
    """Add a user's entries to the built-in platform-host and shared-hosting lists.

    Entries are hosts (``wiki.acme-cloud.com``; a URL or a PSL-style ``*.`` prefix is reduced
    to its host) normalised like list entries: lower case, punycode, no trailing dot. A platform
    host is refused with every host under it; a shared-hosting suffix refuses the hosts under it,
    and itself when it sits below a registrable domain (``sites.google.com``). Each call
    replaces the entries of the previous one (reloading a config does not pile them up) and
    clears the memoised verdicts. Raises ``ValueError`` naming the first entry that is not a
    host with a public suffix; nothing is changed then.
    """
    platform = frozenset(host_list_entry(entry) for entry in platform_hosts)
    shared = frozenset(host_list_entry(entry) for entry in shared_hosting)
    _configured[REASON_PLATFORM_HOST] = platform
    _configured[REASON_SHARED_HOSTING] = shared
    for cached in (
        platform_host_names,
        shared_hosting_suffixes,
        _shared_hosting,
        _refusable_domains,
        classify_host,
        company_domain,
    ):
        cached.cache_clear()


def host_list_entry(entry: str) -> str:
    """A configured list entry (a host, a URL or a ``*.`` suffix) as a lower-case punycode
    host; ``ValueError`` when it is not a host name with a public suffix."""
    text = entry.strip().removeprefix("*.") if isinstance(entry, str) else ""
    normalised = _normalise_host(text) if text else None
    if normalised is None:
        raise ValueError(f"{entry!r} is not a host name with a public suffix")
    return normalised[0]


def email_host(email: str) -> str | None:
    """Return the lower-case host part of ``email`` (after its one ``@``), or ``None``.

    The same rule as the warehouse reader's SQL (``connectors.sql_constructs.email_host``), so
    an address means one thing everywhere: surrounding spaces are trimmed; ``None`` for an
    empty value, no ``@`` or more than one, an empty local part or host, or whitespace inside.
    The host is not validated further: :func:`classify_host` does that.
    """
    if not isinstance(email, str):
        return None
    value = email.strip(" ")
    local, at, host = value.partition("@")
    if not at or not local or not host or "@" in host or _WHITESPACE.search(value):
        return None
    return host.lower()


def _idna_to_ascii(text: str) -> str | None:
    """IDNA 2008 / UTS #46 (non-transitional) punycode of a non-ascii host, or None if invalid.

    Ascii labels are left as they are for the caller's host check, so underscores and ``xn--``
    labels are treated exactly as on the ascii path. The UTS #46 mapping also folds case and
    turns the ideographic and full-width full stops into dots.
    """
    try:
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False).strip(".")
        return ".".join(
            label if label.isascii() else idna.alabel(label).decode("ascii")
            for label in mapped.split(".")
        )
    except UnicodeError:  # idna.IDNAError: a disallowed code point, a label too long...
        return None


def _to_ascii(host: str) -> str | None:
    """Lower-case punycode form of ``host`` with every label checked, or ``None``."""
    if not host.isascii():
        encoded = _idna_to_ascii(host)
        if encoded is None:
            return None
        host = encoded
    host = host.strip(".")
    if len(host) > _MAX_HOST or not _ASCII_HOST.match(host):
        return None
    return host


def _normalise_host(value: str) -> tuple[str, str] | None:
    """(full ascii host, registrable domain) of ``value``, or ``None`` when it has none.

    Not memoised itself: the public entry points that call it in bulk are.
    """
    text = value.strip().lower()
    match = _ASCII_HOST_IN_VALUE.match(text)
    if match:
        host: str | None = match.group(1)
    else:
        match = _HOST_IN_VALUE.match(text)
        host = _to_ascii(match.group(1)) if match and match.group(1) else None
    # A numeric last label is an IPv4 address (or junk): no public suffix is all digits.
    if host is None or len(host) > _MAX_HOST or host.rpartition(".")[2].isdigit():
        return None
    domain = _registrable(host)
    # Underscores pass in subdomain labels only, never in the registrable label.
    if domain is None or "_" in domain:
        return None
    return host, domain


@functools.lru_cache(maxsize=_CACHE_SIZE)
def registrable_domain(value: str) -> str | None:
    """Return the lower-case punycode registrable domain (eTLD+1) of ``value``, or ``None``.

    ``value`` may be an email, a URL (any scheme or none, with ``www``, user-info, port, path,
    query, fragment, upper case, trailing dots, surrounding whitespace) or a bare host:
    ``eng.acme.co.uk`` -> ``acme.co.uk``; ``https://WWW.Acme.com:8443/p?q`` -> ``acme.com``;
    ``münchen.de`` -> ``xn--mnchen-3ya.de``; ``faß.de`` -> ``xn--fa-hia.de`` (IDNA 2008).
    ``None`` for junk: IP addresses, ``localhost``, hosts without a public suffix, bare suffixes
    (``co.uk``), empty or placeholder values, whitespace or invalid characters inside the host,
    labels over 63 characters. Only the PSL's ICANN section counts (``acme.github.io`` ->
    ``github.io``): :func:`company_domain` says whether the value names a company. Memoised.
    """
    if not isinstance(value, str):
        return None
    normalised = _normalise_host(value)
    return normalised[1] if normalised else None


def _listed(host: str, domain: str, listed: frozenset[str]) -> bool:
    """True when ``host`` or any parent of it down to ``domain`` is in ``listed``."""
    if domain in listed:
        return True
    while len(host) > len(domain):
        if host in listed:
            return True
        host = host.partition(".")[2]
    return False


def _shared_hosted(host: str, domain: str) -> bool:
    """True when ``host`` is a tenant's host on a shared-hosting suffix, or such a suffix itself.

    A suffix that is itself a registrable domain (``github.io``, ``pythonanywhere.com``,
    ``zendesk.com``) is the operator's own domain: that host and its ``www`` stay usable, only
    hosts below it are refused. A suffix below a registrable domain (``sites.google.com``) is
    refused with everything under it: there the path names the owner.
    """
    shared = _shared_hosting()
    if domain not in shared.domains:  # the common case: one lookup
        return False
    if host.startswith("www."):
        host = host[4:]
    if host == domain:
        return False
    return _listed(host, domain, shared.suffixes)


@functools.cache
def _refusable_domains() -> frozenset[str]:
    """Registrable domains with a platform host or a shared-hosting suffix at or under them."""
    platform = {domain for host in platform_host_names() if (domain := _registrable(host))}
    return frozenset(platform) | _shared_hosting().domains


def _refusal(host: str, domain: str) -> str | None:
    """Why a CRM value's host names no company (platform or shared hosting), or None."""
    if domain not in _refusable_domains():  # the common case: one lookup
        return None
    if _listed(host, domain, platform_host_names()):
        return REASON_PLATFORM_HOST
    if _shared_hosted(host, domain):
        return REASON_SHARED_HOSTING
    return None


def is_free_mail(domain: str) -> bool:
    """True when ``domain`` (a host or registrable domain) belongs to a free-mail provider."""
    normalised = _normalise_host(domain) if isinstance(domain, str) else None
    if normalised is None:
        return False
    return _listed(*normalised, free_mail_domains())


def is_disposable(domain: str) -> bool:
    """True when ``domain`` (a host or registrable domain) belongs to a disposable-mail provider."""
    normalised = _normalise_host(domain) if isinstance(domain, str) else None
    if normalised is None:
        return False
    return _listed(*normalised, disposable_domains())


@functools.lru_cache(maxsize=_CACHE_SIZE)
def classify_host(host: str) -> HostVerdict:
    """Classify an email host (or a whole email, or an account domain) as a company or not.

    Refused, by the first reason that applies: ``invalid`` (no registrable domain),
    ``disposable``, ``free_mail`` (recognised by registrable domain and by full host:
    ``googlemail.com``, ``yahoo.co.uk``, ``mail.ru``), ``platform_host`` (``jobs.linkedin.com``)
    and ``shared_hosting`` (``acme.github.io``). Memoised: call it once per distinct host.
    """
    normalised = _normalise_host(host) if isinstance(host, str) else None
    if normalised is None:
        return HostVerdict(None, REASON_INVALID)
    full, domain = normalised
    if _listed(full, domain, disposable_domains()):
        return HostVerdict(domain, REASON_DISPOSABLE)
    if _listed(full, domain, free_mail_domains()):
        return HostVerdict(domain, REASON_FREE_MAIL)
    return HostVerdict(domain, _refusal(full, domain))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def company_domain(value: str) -> HostVerdict:
    """The company a CRM domain value names: its registrable domain, or why it names none.

    ``value`` is a Website or domain field value: a URL, a bare host or an email, decorated as
    :func:`registrable_domain` accepts. Refused: ``invalid`` (no registrable domain),
    ``platform_host`` (``https://www.linkedin.com/company/acme-corp``: the path names the
    company) and ``shared_hosting`` (``https://sites.google.com/view/gamma``,
    ``gamma.github.io``). Free-mail and disposable providers are not refused here: a record for
    the provider itself may well name its domain, and no product account ever has one.
    Memoised: call it once per distinct value.
    """
    normalised = _normalise_host(value) if isinstance(value, str) else None
    if normalised is None:
        return HostVerdict(None, REASON_INVALID)
    full, domain = normalised
    return HostVerdict(domain, _refusal(full, domain))


def split_domain_values(raw: str | None) -> list[str]:
    """Split a CRM field holding several domains (``;``, ``,`` or whitespace separated).

    HubSpot ``hs_additional_domains`` and hand-typed Website fields hold lists like
    ``"acme.com; acme.co.uk,acme.de"``. Empty pieces are dropped; values are not normalised.
    """
    if not raw or not isinstance(raw, str):
        return []
    return raw.replace(";", " ").replace(",", " ").split()
