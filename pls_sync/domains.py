"""Email and CRM domain normalisation: registrable domains, free-mail and disposable hosts.

Everything here turns a messy string (an email, a URL, a bare host, a CRM Website field) into the
lower-case punycode *registrable domain* (eTLD+1) that identifies a company, or ``None``.

This is the one domain-core module allowed a non-standard-library import: ``tldextract``. It is
used as pure computation over the Public Suffix List snapshot bundled inside the package: the
extractor is built with no suffix-list URLs and no cache directory, so it never touches the
network or writes to disk; the only I/O is reading that bundled file once. tldextract parses the
list (ICANN section only: private suffixes such as ``github.io`` are not company boundaries);
the lookup itself is the PSL algorithm over punycode rule sets built once from
``TLDExtract.tlds``, because it runs once per distinct CRM value and is several times faster
than ``extract_str`` (100k CRM records are indexed per run). Tests check it agrees with
tldextract.

The free-mail and disposable provider lists live in ``pls_sync/data/*.txt`` (one domain a line,
``#`` comments allowed) and are read once with :mod:`importlib.resources`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

import tldextract

__all__ = [
    "HostVerdict",
    "classify_host",
    "disposable_domains",
    "email_host",
    "free_mail_domains",
    "is_disposable",
    "is_free_mail",
    "registrable_domain",
    "split_domain_values",
]

REASON_INVALID = "invalid"
REASON_FREE_MAIL = "free_mail"
REASON_DISPOSABLE = "disposable"

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
# Ideographic and full-width full stops are label separators in IDNA (RFC 3490 section 3.1).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


@dataclass(frozen=True, slots=True)
class HostVerdict:
    """Whether an email host identifies a company.

    ``domain`` is the registrable domain when one could be computed (also for free-mail and
    disposable hosts, so callers can report them); ``reason`` is ``None`` when the host is usable,
    else ``"invalid"``, ``"free_mail"`` or ``"disposable"``.
    """

    domain: str | None
    reason: str | None

    @property
    def usable(self) -> bool:
        """True when the host names a company domain."""
        return self.reason is None


@functools.cache
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


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
    for rule in _extractor().tlds:
        target = exact
        if rule.startswith("!"):
            target, rule = exception, rule[1:]
        elif rule.startswith("*."):
            target, rule = wildcard, rule[2:]
        try:
            # The list spells IDN suffixes in Unicode; hosts here are punycode.
            target.add(".".join(label.encode("idna").decode("ascii") for label in rule.split(".")))
        except UnicodeError:
            continue  # a rule the stdlib IDNA 2003 codec cannot encode matches no host here
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


def _load_list(name: str) -> frozenset[str]:
    text = (resources.files("pls_sync") / "data" / name).read_text(encoding="utf-8")
    entries = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip().lower().rstrip(".")
        if entry:
            entries.add(entry)
    return frozenset(entries)


@functools.cache
def free_mail_domains() -> frozenset[str]:
    """The free-mail provider domains from ``data/free_mail.txt``."""
    return _load_list("free_mail.txt")


@functools.cache
def disposable_domains() -> frozenset[str]:
    """The disposable-address provider domains from ``data/disposable.txt``."""
    return _load_list("disposable.txt")


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


def _to_ascii(host: str) -> str | None:
    """Lower-case punycode form of ``host`` with every label checked, or ``None``."""
    if not host.isascii():
        host = host.translate(_DOTS).strip(".")
        labels = []
        for label in host.split("."):
            try:
                labels.append(label.encode("idna").decode("ascii").lower())
            except UnicodeError:
                return None  # not a valid IDN label (too long, prohibited code point...)
        host = ".".join(labels)
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
    ``münchen.de`` -> ``xn--mnchen-3ya.de``. ``None`` for junk: IP addresses, ``localhost``,
    hosts without a public suffix, bare suffixes (``co.uk``), empty or placeholder values,
    whitespace or invalid characters inside the host, labels over 63 characters. Memoised.
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
    """Classify an email host (or a whole email): its registrable domain and why it is unusable.

    Free-mail and disposable providers are recognised by registrable domain and by full host
    (``googlemail.com``, ``yahoo.co.uk``, ``mail.ru``). Memoised: call it once per distinct host.
    """
    normalised = _normalise_host(host) if isinstance(host, str) else None
    if normalised is None:
        return HostVerdict(None, REASON_INVALID)
    full, domain = normalised
    if _listed(full, domain, disposable_domains()):
        return HostVerdict(domain, REASON_DISPOSABLE)
    if _listed(full, domain, free_mail_domains()):
        return HostVerdict(domain, REASON_FREE_MAIL)
    return HostVerdict(domain, None)


def split_domain_values(raw: str | None) -> list[str]:
    """Split a CRM field holding several domains (``;``, ``,`` or whitespace separated).

    HubSpot ``hs_additional_domains`` and hand-typed Website fields hold lists like
    ``"acme.com; acme.co.uk,acme.de"``. Empty pieces are dropped; values are not normalised.
    """
    if not raw or not isinstance(raw, str):
        return []
    return raw.replace(";", " ").replace(",", " ").split()
