"""What a shared cache may store and reuse (RFC 9111, RFC 5861): pure decisions, no I/O.

The backend sets the policy with standard headers; this module only reads them. Request
directives (`no-cache`, `max-age=0` from a browser's reload) are ignored, as nginx and
Varnish do by default: the origin's short max-age bounds the staleness anyway, and honouring
them would let any client switch the cache off. A request's `no-store` is honoured.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import parse_qsl, urlencode

RawHeaders = Sequence[tuple[bytes, bytes]]

CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD"})
# final statuses a shared cache may store when the response gives explicit freshness
STORABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 410})
# statuses that make a stale entry usable under stale-if-error (RFC 5861 section 4)
ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})
# request headers that make a request personal: never answered from the cache (section 3.5)
PERSONAL: Final = (b"authorization", b"cookie")


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Directives of one or more Cache-Control lines: lower-case names, unquoted values."""
    directives: dict[str, str | None] = {}
    for value in values:
        for part in _split(value):
            name, sep, arg = part.partition("=")
            name = name.strip().lower()
            if not name:
                continue
            text = arg.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            directives.setdefault(name, text if sep else None)
    return directives


def _split(value: str) -> list[str]:
    """Split on commas outside quoted strings (`no-cache="a, b"` is one directive)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _seconds(value: str | None) -> int | None:
    """A delta-seconds argument; None when absent or malformed (then the directive is void)."""
    if value is None or not value.isdigit():
        return None
    return int(value)


def cache_key(scheme: str, host: str, target: str) -> str:
    """The primary key: scheme, host and path with a normalised query, method-independent.

    Scheme and host are in it because the backend builds absolute links (pagination) from
    them. The query is decoded and re-encoded with its parameters sorted by name (the order
    of repeated names is kept), so `?b=2&a=1` and `?a=1&b=2` share an entry.
    """
    path, _, query = target.partition("?")
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        pairs.sort(key=lambda kv: kv[0])
        query = urlencode(pairs)
    return (
        f"{scheme}://{host.lower()}{path}?{query}" if query else f"{scheme}://{host.lower()}{path}"
    )


def header_values(raw: RawHeaders, lower_name: bytes) -> list[str]:
    return [v.decode("latin-1") for n, v in raw if n.lower() == lower_name]


def vary_names(raw: RawHeaders) -> tuple[str, ...] | None:
    """The response's Vary field names, lower-case and sorted; None for `Vary: *`."""
    names: set[str] = set()
    for value in header_values(raw, b"vary"):
        for name in value.split(","):
            name = name.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def variant(raw: RawHeaders, names: tuple[str, ...]) -> tuple[str, ...]:
    """The request's values of the Vary fields, normalised (lines joined, spaces trimmed)."""
    if not names:
        return ()
    return tuple(
        ", ".join(" ".join(v.split()) for v in header_values(raw, name.encode())) for name in names
    )


@dataclass(frozen=True, slots=True)
class RequestTraits:
    """What the cache needs to know about one GET/HEAD request."""

    personal: bool  # carries Authorization or Cookie: never answered from the cache
    authorized: bool  # carries Authorization (RFC 9111 3.5 for storing its response)
    no_store: bool  # the client asked that nothing of this exchange be stored
    bypass: bool  # a Range request or one with a body: not for the cache at all


def request_traits(raw: RawHeaders, has_body: bool) -> RequestTraits:
    authorized = personal = no_store = ranged = False
    for name, value in raw:
        lname = name.lower()
        if lname == b"authorization":
            authorized = personal = True
        elif lname == b"cookie":
            personal = True
        elif lname == b"range":
            ranged = True
        elif lname == b"cache-control" and b"no-store" in value.lower():
            no_store = True
    return RequestTraits(personal, authorized, no_store, ranged or has_body)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a stored response may be used: fresh for `lifetime` seconds of age, then
    stale-while-revalidate and stale-if-error windows (0 under must-revalidate)."""

    lifetime: float
    while_revalidate: float
    if_error: float
    initial_age: float  # the Age the response arrived with

    @property
    def keep_for(self) -> float:
        """Age after which the entry is of no use at all."""
        return self.lifetime + max(self.while_revalidate, self.if_error)


def storable(status: int, raw: RawHeaders, traits: RequestTraits) -> tuple[Freshness | None, str]:
    """May this GET response be stored by a shared cache, and for how long? (Freshness or
    None, and the reason when not)."""
    if traits.no_store:
        return None, "request no-store"
    if status not in STORABLE_STATUSES:
        return None, f"status {status}"
    cc = parse_cache_control(header_values(raw, b"cache-control"))
    if "no-store" in cc:
        return None, "no-store"
    if "private" in cc:
        return None, "private"
    if "no-cache" in cc:
        return None, "no-cache"  # every reuse would need a revalidation we do not make
    if header_values(raw, b"set-cookie"):
        return None, "set-cookie"
    if vary_names(raw) is None:
        return None, "vary *"
    s_maxage = _seconds(cc.get("s-maxage"))
    if traits.authorized and not (
        "public" in cc or s_maxage is not None or "must-revalidate" in cc
    ):
        return None, "authorization"  # RFC 9111 3.5
    if traits.personal and not traits.authorized and "public" not in cc and s_maxage is None:
        return None, "cookie"
    lifetime = s_maxage if s_maxage is not None else _seconds(cc.get("max-age"))
    if lifetime is None:
        lifetime = _expires_lifetime(raw)  # against the response's own Date: no clock skew
    if lifetime is None:
        return None, "no explicit freshness"
    strict = "must-revalidate" in cc or "proxy-revalidate" in cc or s_maxage is not None
    swr = 0 if strict else _seconds(cc.get("stale-while-revalidate")) or 0
    sie = 0 if strict else _seconds(cc.get("stale-if-error")) or 0
    ages = header_values(raw, b"age")
    age = (_seconds(ages[0].strip()) if ages else None) or 0
    freshness = Freshness(float(lifetime), float(swr), float(sie), float(age))
    if freshness.keep_for <= age:
        return None, "already too old"
    return freshness, ""


def _expires_lifetime(raw: RawHeaders) -> int | None:
    expires = header_values(raw, b"expires")
    date = header_values(raw, b"date")
    if not expires or not date:
        return None
    try:
        delta = parsedate_to_datetime(expires[0]) - parsedate_to_datetime(date[0])
    except (TypeError, ValueError):
        return 0  # an invalid Expires means "already expired" (RFC 9111 5.3)
    return max(0, int(delta.total_seconds()))


def is_error(status: int) -> bool:
    return status in ERROR_STATUSES


def surrogate_keys(raw: RawHeaders) -> frozenset[str]:
    """Tags the backend put on the response (`Surrogate-Key: tours tour:<id>`)."""
    return frozenset(t for v in header_values(raw, b"surrogate-key") for t in v.split())


def purge_tags(raw: RawHeaders) -> frozenset[str]:
    """Tags a backend response asks every cache to drop (`X-Cache-Purge: tour:<id>`)."""
    return frozenset(t for v in header_values(raw, b"x-cache-purge") for t in v.split())
