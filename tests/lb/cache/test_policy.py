"""RFC 9111 / RFC 5861 decisions of a shared cache (lb/cache/policy.py): pure, no I/O."""

from __future__ import annotations

import pytest

from lb.cache.policy import (
    cache_key,
    parse_cache_control,
    purge_tags,
    request_traits,
    storable,
    surrogate_keys,
    variant,
    vary_names,
)

ANON = request_traits([], has_body=False)


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_cache_control_directives_are_case_insensitive_and_unquoted() -> None:
    cc = parse_cache_control(['Public, MAX-AGE="5"', 'no-cache="set-cookie, x", s-maxage=3'])
    assert cc == {"public": None, "max-age": "5", "no-cache": "set-cookie, x", "s-maxage": "3"}


def test_the_key_ignores_the_method_and_the_order_of_query_parameters() -> None:
    a = cache_key("http", "Shop.Example:8080", "/api/tours/?search=x&page=2")
    b = cache_key("http", "shop.example:8080", "/api/tours/?page=2&search=x")
    assert a == b == "http://shop.example:8080/api/tours/?page=2&search=x"
    assert cache_key("http", "h", "/p?a=%41") == cache_key("http", "h", "/p?a=A")
    # repeated names keep their order; scheme and host tell entries apart (absolute links)
    assert cache_key("http", "h", "/p?a=1&a=2") != cache_key("http", "h", "/p?a=2&a=1")
    assert cache_key("https", "h", "/p") != cache_key("http", "h", "/p")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (h(("Cache-Control", "private, max-age=60")), "private"),
        (h(("Cache-Control", "no-store, max-age=60")), "no-store"),
        (h(("Cache-Control", "no-cache, max-age=60")), "no-cache"),
        (h(("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")), "set-cookie"),
        (h(("Cache-Control", "max-age=60"), ("Vary", "Accept, *")), "vary *"),
        (h(("Content-Type", "application/json")), "no explicit freshness"),
        (h(("Cache-Control", "max-age=oops")), "no explicit freshness"),
    ],
)
def test_responses_a_shared_cache_must_not_store(
    headers: list[tuple[bytes, bytes]], reason: str
) -> None:
    assert storable(200, headers, ANON) == (None, reason)


def test_only_final_understood_statuses_are_stored() -> None:
    public = h(("Cache-Control", "public, max-age=5"))
    assert storable(404, public, ANON)[0] is not None
    assert storable(500, public, ANON) == (None, "status 500")
    assert storable(206, public, ANON) == (None, "status 206")


def test_authorization_needs_public_s_maxage_or_must_revalidate() -> None:
    authorized = request_traits(h(("Authorization", "Bearer x")), has_body=False)
    assert authorized.personal and authorized.authorized
    assert storable(200, h(("Cache-Control", "max-age=5")), authorized) == (None, "authorization")
    assert storable(200, h(("Cache-Control", "public, max-age=5")), authorized)[0] is not None
    assert storable(200, h(("Cache-Control", "s-maxage=5")), authorized)[0] is not None
    cookie = request_traits(h(("Cookie", "a=b")), has_body=False)
    assert cookie.personal and not cookie.authorized
    assert storable(200, h(("Cache-Control", "max-age=5")), cookie) == (None, "cookie")
    assert storable(200, h(("Cache-Control", "public, max-age=5")), cookie)[0] is not None


def test_freshness_and_the_stale_windows() -> None:
    fresh, _ = storable(
        200,
        h(
            ("Cache-Control", "public, max-age=1, stale-while-revalidate=5, stale-if-error=60"),
            ("Age", "0"),
        ),
        ANON,
    )
    assert fresh is not None
    assert (fresh.lifetime, fresh.while_revalidate, fresh.if_error) == (1, 5, 60)
    assert fresh.keep_for == 61
    # s-maxage wins over max-age for a shared cache, and forbids serving stale
    shared, _ = storable(
        200, h(("Cache-Control", "max-age=1, s-maxage=9, stale-if-error=60")), ANON
    )
    assert shared is not None and (shared.lifetime, shared.if_error) == (9, 0)
    strict, _ = storable(
        200, h(("Cache-Control", "max-age=1, must-revalidate, stale-if-error=9")), ANON
    )
    assert strict is not None and strict.if_error == 0
    aged, _ = storable(200, h(("Cache-Control", "max-age=10"), ("Age", "4")), ANON)
    assert aged is not None and aged.initial_age == 4
    assert storable(200, h(("Cache-Control", "max-age=10"), ("Age", "10")), ANON)[1] == (
        "already too old"
    )


def test_expires_is_judged_against_the_responses_date() -> None:
    headers = h(
        ("Date", "Sun, 29 Nov 2026 10:00:00 GMT"), ("Expires", "Sun, 29 Nov 2026 10:00:30 GMT")
    )
    fresh, _ = storable(200, headers, ANON)
    assert fresh is not None and fresh.lifetime == 30


def test_vary_selects_a_variant_by_normalised_request_values() -> None:
    names = vary_names(h(("Vary", "Accept-Language, accept"), ("Vary", "Accept-Encoding")))
    assert names == ("accept", "accept-encoding", "accept-language")
    one = variant(h(("Accept-Language", "en,  fr"), ("Accept", "*/*")), names)
    two = variant(h(("accept", "*/*"), ("accept-language", "en, fr")), names)
    assert one == two
    assert variant(h(("Accept-Language", "de")), names) != one
    assert vary_names(h(("Vary", "*"))) is None


def test_range_requests_and_bodies_bypass_the_cache() -> None:
    assert request_traits(h(("Range", "bytes=0-1")), has_body=False).bypass
    assert request_traits([], has_body=True).bypass
    assert request_traits(h(("Cache-Control", "no-store")), has_body=False).no_store


def test_tags_and_purge_orders() -> None:
    raw = h(("Surrogate-Key", "tours  tour:1"), ("X-Cache-Purge", "tour:1 tour:2"))
    assert surrogate_keys(raw) == {"tours", "tour:1"}
    assert purge_tags(raw) == {"tour:1", "tour:2"}
