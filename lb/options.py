"""The proxy's options: the part of the settings the request path reads (built in lb/app.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lb.attempt import Timeouts
from lb.config import Settings


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """What the proxy needs of the settings (built from them in lb/app.py)."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    idle_timeout: float = 60.0  # LB_IDLE_TIMEOUT: a body may stall this long
    request_deadline: float = 60.0  # LB_REQUEST_DEADLINE: all attempts of one request
    max_body_bytes: int = 256 * 1024 * 1024  # LB_MAX_BODY_BYTES
    request_buffering: bool = True  # LB_REQUEST_BUFFERING
    stream_paths: tuple[str, ...] = ()  # LB_STREAM_PATHS: prefixes that stream anyway
    body_memory_bytes: int = 256 * 1024  # LB_BODY_MEMORY_BYTES: spooled to a file beyond
    access_log: bool = True  # LB_ACCESS_LOG


def proxy_options(settings: Settings) -> ProxyOptions:
    """The proxy's options from the settings."""
    return ProxyOptions(
        timeouts=Timeouts(connect=settings.connect_timeout, first_byte=settings.first_byte_timeout),
        idle_timeout=settings.idle_timeout,
        request_deadline=settings.request_deadline,
        max_body_bytes=settings.max_body_bytes,
        request_buffering=settings.request_buffering,
        stream_paths=settings.stream_paths,
        body_memory_bytes=settings.body_memory_bytes,
        access_log=settings.access_log,
    )
