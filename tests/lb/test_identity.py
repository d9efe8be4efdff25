"""Client identity: the peer, or X-Forwarded-For walked from the right past trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from lb.identity import ClientResolver

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    resolver = ClientResolver()
    client = resolver.resolve("203.0.113.7", "198.51.100.1")
    assert (client.ip, client.key, client.via_trusted_proxy) == (
        "203.0.113.7",
        "203.0.113.7",
        False,
    )


def test_rotating_spoofed_forwarded_for_from_an_untrusted_peer_shares_one_bucket() -> None:
    resolver = ClientResolver(TRUSTED)
    keys = {resolver.resolve("203.0.113.7", f"198.51.100.{i}, 10.0.0.{i}").key for i in range(50)}
    assert keys == {"203.0.113.7"}
    assert not resolver.resolve("203.0.113.7", "1.2.3.4").via_trusted_proxy


def test_behind_a_trusted_proxy_distinct_clients_get_distinct_buckets() -> None:
    resolver = ClientResolver(TRUSTED)
    keys = {resolver.resolve("10.0.0.2", f"198.51.100.{i}").key for i in range(1, 51)}
    assert len(keys) == 50
    client = resolver.resolve("10.0.0.2", "198.51.100.9")
    assert (client.ip, client.via_trusted_proxy) == ("198.51.100.9", True)


def test_a_forged_leftmost_entry_cannot_land_in_another_clients_bucket() -> None:
    resolver = ClientResolver(TRUSTED)
    victim = resolver.resolve("10.0.0.2", "198.51.100.20").key
    # the attacker writes the victim's address first; the proxy appends the real peer
    attacker = resolver.resolve("10.0.0.2", "198.51.100.20, 203.0.113.66").key
    assert attacker == "203.0.113.66" != victim


def test_walks_past_every_trusted_hop_from_the_right() -> None:
    resolver = ClientResolver(TRUSTED)
    client = resolver.resolve("10.0.0.2", "198.51.100.5, 203.0.113.9, 10.1.1.1, 10.2.2.2")
    assert client.key == "203.0.113.9"


def test_all_hops_trusted_the_farthest_trusted_one_is_the_client() -> None:
    resolver = ClientResolver(TRUSTED)
    assert resolver.resolve("10.0.0.2", "10.9.9.9, 10.1.1.1").key == "10.9.9.9"


def test_garbage_in_the_chain_stops_the_walk() -> None:
    resolver = ClientResolver(TRUSTED)
    # nothing left of garbage is believed; the nearest vouched-for hop is used
    assert resolver.resolve("10.0.0.2", "198.51.100.1, unknown, 10.3.3.3").key == "10.3.3.3"
    assert resolver.resolve("10.0.0.2", "198.51.100.1, not-an-ip").key == "10.0.0.2"
    assert resolver.resolve("10.0.0.2", " , ").key == "10.0.0.2"


def test_ports_brackets_and_spaces_in_forwarded_for() -> None:
    resolver = ClientResolver(TRUSTED)
    assert resolver.resolve("10.0.0.2", " 198.51.100.1:5555 ").key == "198.51.100.1"
    v6 = resolver.resolve("10.0.0.2", "[2001:db8:1:2::9]:443")
    assert (v6.ip, v6.key) == ("2001:db8:1:2::9", "2001:db8:1:2::/64")


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
        ("2001:db8:aa:bb:ffff::1", "2001:db8:aa:bb::/64"),
        ("2001:db8:aa:bc::1", "2001:db8:aa:bc::/64"),
        ("::ffff:198.51.100.3", "198.51.100.3"),  # an IPv4 client on a dual-stack socket
        ("198.51.100.3", "198.51.100.3"),
    ],
)
def test_ipv6_clients_count_by_their_64(peer: str, key: str) -> None:
    assert ClientResolver().resolve(peer).key == key


def test_one_ipv6_host_rotating_addresses_in_its_64_shares_a_bucket() -> None:
    resolver = ClientResolver()
    keys = {resolver.resolve(f"2001:db8:1:2:{i:x}::{i:x}").key for i in range(1, 100)}
    assert keys == {"2001:db8:1:2::/64"}


def test_trusted_ipv6_proxy_and_ipv4_client() -> None:
    resolver = ClientResolver(TRUSTED)
    client = resolver.resolve("fd00::1", "198.51.100.77, fd00::2")
    assert (client.key, client.via_trusted_proxy) == ("198.51.100.77", True)


def test_trusted_peer_without_forwarded_for_is_itself_the_client() -> None:
    resolver = ClientResolver(TRUSTED)
    client = resolver.resolve("10.0.0.2", None)
    assert (client.key, client.via_trusted_proxy) == ("10.0.0.2", True)


def test_unparsable_peer_gets_a_stable_key_not_an_error() -> None:
    resolver = ClientResolver(TRUSTED)
    assert resolver.resolve("", "198.51.100.1").key == "unknown"
    assert resolver.resolve("/run/lb.sock").key == "/run/lb.sock"


def test_peer_cache_stays_bounded() -> None:
    resolver = ClientResolver()
    for i in range(70000):
        resolver.resolve(f"198.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(resolver._cache) <= 65537


def test_chains_are_cached_by_peer_and_chain_and_long_ones_are_not_kept() -> None:
    resolver = ClientResolver(TRUSTED)
    first = resolver.resolve("10.0.0.1", "198.51.100.7")
    assert resolver.resolve("10.0.0.1", "198.51.100.7") is first  # answered from the cache
    # the same chain from an untrusted peer is not believed, whatever was cached before
    assert resolver.resolve("203.0.113.9", "198.51.100.7").key == "203.0.113.9"
    assert resolver.resolve("10.0.0.1", "198.51.100.8").key == "198.51.100.8"
    long_chain = ", ".join(["10.1.1.1"] * 100) + ", 198.51.100.9"
    before = len(resolver._cache)
    assert resolver.resolve("10.0.0.1", long_chain).key == "198.51.100.9"
    assert len(resolver._cache) == before  # a client-written header of any length: not kept
