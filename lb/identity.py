"""Who the client is: the peer address, or X-Forwarded-For walked past trusted proxies (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CACHED_CHAIN = 200  # X-Forwarded-For values up to this length are cached with their answer
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Client:
    """The client as the lb sees it: `ip` for X-Real-IP, `key` for its rate-limit bucket."""

    ip: str
    key: str
    # the peer is a trusted proxy: its X-Forwarded-For chain is kept and extended
    via_trusted_proxy: bool


def _parse(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def bucket_key(addr: Address) -> str:
    """IPv4 clients count by address; an IPv6 client counts by its /64."""
    if isinstance(addr, ipaddress.IPv6Address):
        net = ipaddress.IPv6Network((int(addr) >> 64 << 64, 64))
        return str(net)
    return str(addr)


class ClientResolver:
    """Resolve the client from the peer address and X-Forwarded-For.

    X-Forwarded-For is believed only when the peer is a trusted proxy, and then it is
    walked from the right, skipping trusted proxies: the first untrusted address is the
    client. The leftmost entry is never believed by default, since any client can write it.
    """

    def __init__(self, trusted: Sequence[Network] = ()) -> None:
        self.trusted = tuple(trusted)
        self._cache: dict[str, Client] = {}

    def is_trusted(self, addr: Address) -> bool:
        return any(addr in net for net in self.trusted)

    def resolve(self, peer: str, forwarded_for: str | None = None) -> Client:
        """The client of a request from `peer` with this X-Forwarded-For (a pure function of
        the two, so answers are cached: bounded, cleared whole when full)."""
        believed = bool(self.trusted and forwarded_for)
        if believed and len(forwarded_for or "") > CACHED_CHAIN:
            return self._walk(peer, forwarded_for)  # a long chain is not kept in memory
        key = f"{peer}|{forwarded_for}" if believed else peer
        client = self._cache.get(key)
        if client is None:
            client = self._walk(peer, forwarded_for) if believed else self._from_peer(peer)
            if len(self._cache) > 65536:
                self._cache.clear()
            self._cache[key] = client
        return client

    def _walk(self, peer: str, forwarded_for: str | None) -> Client:
        assert forwarded_for is not None
        peer_addr = _parse(peer)
        if peer_addr is None or not self.is_trusted(peer_addr):
            return self._from_peer(peer)
        # the nearest address vouched for so far: the peer, then each trusted hop
        nearest = peer_addr
        for hop in reversed(forwarded_for.split(",")):
            addr = _parse(hop)
            if addr is None:
                # garbage in the chain: nothing left of it can be believed
                break
            if not self.is_trusted(addr):
                return Client(ip=str(addr), key=bucket_key(addr), via_trusted_proxy=True)
            nearest = addr
        # every believable hop was a trusted proxy: the farthest of them is the client
        return Client(ip=str(nearest), key=bucket_key(nearest), via_trusted_proxy=True)

    def _from_peer(self, peer: str) -> Client:
        addr = _parse(peer)
        if addr is None:  # e.g. a unix socket peer
            return Client(ip=peer or "unknown", key=peer or "unknown", via_trusted_proxy=False)
        trusted = self.is_trusted(addr)
        return Client(ip=str(addr), key=bucket_key(addr), via_trusted_proxy=trusted)
