"""Header rules of the proxy: hop-by-hop stripping, forwarding headers, request ids (pure)."""

from __future__ import annotations

import random

from lb import headers as h


def head_lines(head: bytes) -> list[str]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].decode("latin-1").split("\r\n")


def build(raw: list[tuple[bytes, bytes]], **kw: object) -> list[str]:
    options: dict[str, object] = {
        "extra": (("X-Forwarded-For", "10.0.0.1"), ("X-Request-ID", "rid-1")),
        "content_length": None,
        "chunked": False,
        "default_host": "backend:8001",
    }
    options.update(kw)
    return head_lines(h.upstream_head("GET", "/a?b=1", raw, **options))  # type: ignore[arg-type]


def test_hop_by_hop_and_connection_named_headers_are_not_forwarded() -> None:
    lines = build(
        [
            (b"Host", b"shop.example"),
            (b"Connection", b"keep-alive, X-Secret-Hop"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"h2c"),
            (b"X-Secret-Hop", b"1"),
            (b"Accept", b"application/json"),
        ]
    )
    assert lines[0] == "GET /a?b=1 HTTP/1.1"
    names = [line.split(":", 1)[0].lower() for line in lines[1:]]
    assert "host" in names and "accept" in names
    for gone in ("connection", "keep-alive", "proxy-connection", "te", "upgrade", "x-secret-hop"):
        assert gone not in names


def test_client_forwarding_headers_are_replaced_by_ours() -> None:
    lines = build(
        [
            (b"Host", b"x"),
            (b"X-Forwarded-For", b"6.6.6.6"),
            (b"X-Real-IP", b"6.6.6.6"),
            (b"X-Request-ID", b"spoofed"),
            (b"Content-Length", b"999"),
        ]
    )
    assert "X-Forwarded-For: 10.0.0.1" in lines
    assert "X-Request-ID: rid-1" in lines
    assert not any("6.6.6.6" in line or "spoofed" in line or "999" in line for line in lines)


def test_body_framing_is_set_by_the_lb() -> None:
    chunked = build([(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")], chunked=True)
    assert chunked.count("Transfer-Encoding: chunked") == 1
    sized = build([(b"Host", b"x")], content_length=12)
    assert "Content-Length: 12" in sized


def test_missing_host_gets_the_backend() -> None:
    assert "Host: backend:8001" in build([])


def test_response_hop_by_hop_headers_are_stripped() -> None:
    out = h.downstream_headers(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"X-Internal"),
            (b"X-Internal", b"yes"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert "Connection" not in out and "X-Internal" not in out
    assert "Transfer-Encoding" not in out


def test_request_id_is_kept_when_well_formed_else_generated() -> None:
    rng = random.Random(1)
    assert h.request_id("req-42_a.b", rng) == "req-42_a.b"
    assert h.request_id("3f2c9a1e-9b1c-4f7e-8a55-0e2f1c6d7b80", rng).startswith("3f2c9a1e")
    for bad in (None, "", "has space", "x" * 200, "<script>", "a\tb"):
        new = h.request_id(bad, rng)
        assert len(new) == 32 and all(c in "0123456789abcdef" for c in new)
    assert h.request_id(None, rng) != h.request_id(None, rng)


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    assert h.forwarded_for("10.0.0.5", "6.6.6.6", via_trusted_proxy=False) == "10.0.0.5"
    assert h.forwarded_for("10.0.0.5", "1.2.3.4", via_trusted_proxy=True) == "1.2.3.4, 10.0.0.5"
    assert h.forwarded_for("10.0.0.5", None, via_trusted_proxy=True) == "10.0.0.5"
    assert h.forwarded_proto("https", via_trusted_proxy=False) == "http"
    assert h.forwarded_proto("https", via_trusted_proxy=True) == "https"
    assert h.forwarded_proto("gopher", via_trusted_proxy=True) == "http"


def test_header_block_size_counts_every_byte_of_the_lines() -> None:
    assert h.raw_header_bytes([(b"Host", b"abc")]) == len(b"Host: abc\r\n")


def test_response_framing_follows_method_status_and_client_version() -> None:
    from lb.relay import framing

    assert framing("HEAD", 200, True, http11=True) == "none"
    assert framing("GET", 204, False, http11=True) == "none"
    assert framing("GET", 304, True, http11=True) == "none"
    assert framing("GET", 200, True, http11=True) == "length"
    assert framing("GET", 200, False, http11=True) == "chunked"
    assert framing("GET", 200, False, http11=False) == "close"


def test_response_head_marks_keep_alive_for_each_http_version() -> None:
    raw = [(b"Content-Length", b"2"), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"t=5")]
    head = h.response_head(
        200, "", raw, (("X-Request-ID", "r1"),), http11=True, framing="length", keep_alive=True
    )
    lines = head_lines(head)
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "Content-Length: 2" in lines and "X-Request-ID: r1" in lines
    assert not any(line.lower().startswith(("connection", "keep-alive")) for line in lines)
    old = head_lines(
        h.response_head(200, "OK", raw, (), http11=False, framing="length", keep_alive=True)
    )
    assert "Connection: keep-alive" in old
    closing = head_lines(
        h.response_head(200, "OK", [], (), http11=True, framing="chunked", keep_alive=False)
    )
    assert "Transfer-Encoding: chunked" in closing and "Connection: close" in closing
