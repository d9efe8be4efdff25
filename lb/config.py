"""Frozen lb settings built once from the environment: the only reader of os.environ."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from lb.admission.options import AdmissionOptions
from lb.admission.rules import DEFAULT_RULES, Rule, RuleError, parse_rules
from lb.priority import DEFAULT_PRIORITY_RULES, PriorityRule, parse_priority_rules
from lb.upstream.backend import BackendURL

T = TypeVar("T")

DEFAULT_BACKENDS = "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"
ALGORITHMS = ("p2c", "round_robin")
REDIS_FAILURE_MODES = ("local", "open", "closed")


class ConfigError(Exception):
    """A bad environment value: names the variable, the value and what is expected."""

    def __init__(self, variable: str, value: str, expected: str, *, detail: str = "") -> None:
        self.variable, self.value, self.expected = variable, value, expected
        super().__init__(f"{variable}={value!r}: {detail or 'expected ' + expected}")


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Settings:
    # listeners and processes
    listen: Address
    admin_listen: Address
    workers: int
    # upstream pool
    backends: tuple[BackendURL, ...]
    algorithm: str
    seed: int | None
    upstream_keepalive: int
    # timeouts, seconds
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    header_timeout: float
    request_deadline: float
    drain_timeout: float
    # request limits
    max_body_bytes: int
    max_header_bytes: int
    # request buffering (nginx's proxy_request_buffering)
    request_buffering: bool
    stream_paths: tuple[str, ...]
    body_memory_bytes: int
    # bodiless requests answered by callbacks, not a coroutine (lb/fastpath.py)
    fast_path: bool
    # retries
    max_retries: int
    retry_budget_ratio: float
    retry_budget_min: int
    # active health checks
    health_path: str
    health_interval: float
    health_timeout: float
    health_rise: int
    health_fall: int
    # passive outlier ejection
    outlier_consecutive_failures: int
    outlier_base_ejection: float
    outlier_max_ejection: float
    outlier_max_ejected_ratio: float
    error_clients: int
    # circuit breaker
    breaker_failure_ratio: float
    breaker_min_requests: int
    breaker_window: float
    breaker_open_seconds: float
    # overload: adaptive concurrency limits, bounded wait, priorities
    limit_min: int
    limit_max: int
    queue_delay: float
    probe_interval: float
    critical_reserve: float
    priority_rules: tuple[PriorityRule, ...]
    # admission
    bucket_capacity: int
    leak_rate: float
    rate_rules: tuple[Rule, ...]
    rate_dry_run: bool
    redis_url: str | None
    redis_cluster: bool
    redis_failure: str
    redis_timeout: float
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    # observability
    log_level: str
    access_log: bool
    # set by the master for its workers (prometheus_client's multiprocess mode); "" otherwise
    prometheus_dir: str = ""
    # the micro-cache (lb/cache/): bytes per worker (0: off), largest entry, coalescing wait
    cache_bytes: int = 0
    cache_max_entry_bytes: int = 1024 * 1024
    cache_lock_timeout: float = 5.0
    # admin listener: writes need this bearer token when set
    admin_token: str | None = None


def _address(text: str) -> Address:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError
    if host != "localhost" and not all(c.isalnum() or c in ".-" for c in host):
        ipaddress.ip_address(host)  # IPv6 literal, or ValueError
    return Address(host, int(port_text))


def _backend(text: str) -> BackendURL:
    parts = urlsplit(text.strip())
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError
    if parts.query or parts.fragment or parts.username:
        raise ValueError
    return BackendURL(parts.hostname, parts.port or 80)


def _backends(text: str) -> tuple[BackendURL, ...]:
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError
    backends = tuple(_backend(item) for item in items)
    if len(set(backends)) != len(backends):
        raise ValueError
    return backends


def parse_backends(text: str) -> tuple[BackendURL, ...]:
    """LB_BACKENDS' grammar, for the admin listener's live backend set; ValueError if bad."""
    return _backends(text)


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()
    )


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError
        return text

    return parse


def _optional(text: str) -> str | None:
    return text.strip() or None


def _paths(text: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    if not all(p.startswith("/") for p in paths):
        raise ValueError
    return paths


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError
    return text


def _redis_url(text: str) -> str | None:
    if not text.strip():
        return None
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError
    return text.strip()


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def __call__(self, name: str, default: str, parse: Callable[[str], T], expected: str) -> T:
        raw = self.environ.get(name, default)
        try:
            return parse(raw)
        except (ValueError, TypeError, RuleError) as exc:
            detail = str(exc) if isinstance(exc, RuleError) else ""
            raise ConfigError(name, raw, expected, detail=detail) from None


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validate every lb variable in `environ`; raise ConfigError on the first bad one."""
    get = _Reader(environ)
    positive = "a number of seconds > 0"
    settings = Settings(
        listen=get("LB_LISTEN", "127.0.0.1:8080", _address, "host:port, e.g. 127.0.0.1:8080"),
        admin_listen=get(
            "LB_ADMIN_LISTEN", "127.0.0.1:9100", _address, "host:port, e.g. 127.0.0.1:9100"
        ),
        workers=get("LB_WORKERS", "1", _int_at_least(1), "a whole number >= 1"),
        backends=get(
            "LB_BACKENDS",
            DEFAULT_BACKENDS,
            _backends,
            "comma-separated distinct http://host:port URLs",
        ),
        algorithm=get("LB_ALGORITHM", "p2c", _choice(ALGORITHMS), "one of p2c, round_robin"),
        seed=get("LB_SEED", "", lambda t: int(t) if t.strip() else None, "an integer or empty"),
        upstream_keepalive=get(
            "LB_UPSTREAM_KEEPALIVE", "128", _int_at_least(0), "a whole number >= 0"
        ),
        connect_timeout=get("LB_CONNECT_TIMEOUT", "1", _positive_float, positive),
        first_byte_timeout=get("LB_FIRST_BYTE_TIMEOUT", "30", _positive_float, positive),
        idle_timeout=get("LB_IDLE_TIMEOUT", "60", _positive_float, positive),
        header_timeout=get("LB_HEADER_TIMEOUT", "10", _positive_float, positive),
        request_deadline=get("LB_REQUEST_DEADLINE", "60", _positive_float, positive),
        drain_timeout=get("LB_DRAIN_TIMEOUT", "30", _positive_float, positive),
        max_body_bytes=get(
            "LB_MAX_BODY_BYTES", str(256 * 1024 * 1024), _int_at_least(0), "a byte count >= 0"
        ),
        max_header_bytes=get(
            "LB_MAX_HEADER_BYTES", "16384", _int_at_least(1024), "a byte count >= 1024"
        ),
        request_buffering=get("LB_REQUEST_BUFFERING", "1", _bool, "0 or 1"),
        stream_paths=get(
            "LB_STREAM_PATHS", "", _paths, "comma-separated path prefixes, e.g. /upload/,/ws/"
        ),
        body_memory_bytes=get(
            "LB_BODY_MEMORY_BYTES", str(256 * 1024), _int_at_least(0), "a byte count >= 0"
        ),
        fast_path=get("LB_FAST_PATH", "1", _bool, "0 or 1"),
        max_retries=get("LB_MAX_RETRIES", "2", _int_at_least(0), "a whole number >= 0"),
        retry_budget_ratio=get("LB_RETRY_BUDGET", "0.2", _ratio, "a ratio between 0 and 1"),
        retry_budget_min=get("LB_RETRY_BUDGET_MIN", "3", _int_at_least(0), "a whole number >= 0"),
        health_path=get("LB_HEALTH_PATH", "/healthz", _path, "a path starting with '/'"),
        health_interval=get("LB_HEALTH_INTERVAL", "2", _positive_float, positive),
        health_timeout=get("LB_HEALTH_TIMEOUT", "1", _positive_float, positive),
        health_rise=get("LB_HEALTH_RISE", "2", _int_at_least(1), "a whole number >= 1"),
        health_fall=get("LB_HEALTH_FALL", "2", _int_at_least(1), "a whole number >= 1"),
        outlier_consecutive_failures=get(
            "LB_OUTLIER_FAILURES", "3", _int_at_least(1), "a whole number >= 1"
        ),
        outlier_base_ejection=get("LB_OUTLIER_BASE_EJECTION", "5", _positive_float, positive),
        outlier_max_ejection=get("LB_OUTLIER_MAX_EJECTION", "300", _positive_float, positive),
        outlier_max_ejected_ratio=get(
            "LB_OUTLIER_MAX_EJECTED", "0.5", _ratio, "a ratio between 0 and 1"
        ),
        error_clients=get("LB_ERROR_CLIENTS", "3", _int_at_least(1), "a whole number >= 1"),
        breaker_failure_ratio=get("LB_BREAKER_RATIO", "0.5", _ratio, "a ratio between 0 and 1"),
        breaker_min_requests=get(
            "LB_BREAKER_MIN_REQUESTS", "20", _int_at_least(1), "a whole number >= 1"
        ),
        breaker_window=get("LB_BREAKER_WINDOW", "10", _positive_float, positive),
        breaker_open_seconds=get("LB_BREAKER_OPEN", "5", _positive_float, positive),
        limit_min=get("LB_LIMIT_MIN", "2", _int_at_least(1), "a whole number >= 1"),
        limit_max=get("LB_LIMIT_MAX", "128", _int_at_least(1), "a whole number >= 1"),
        queue_delay=get("LB_QUEUE_DELAY", "0.1", _positive_float, positive),
        probe_interval=get("LB_PROBE_INTERVAL", "30", _positive_float, positive),
        critical_reserve=get(
            "LB_CRITICAL_RESERVE", "0.1", _ratio, "a ratio between 0 and 1 (exclusive of 1)"
        ),
        priority_rules=get(
            "LB_PRIORITY_RULES",
            DEFAULT_PRIORITY_RULES,
            parse_priority_rules,
            "METHOD PATH_PREFIX=CLASS rules separated by ';', CLASS one of critical, normal, low",
        ),
        bucket_capacity=get("BUCKET_CAPACITY", "20", _int_at_least(1), "a whole number >= 1"),
        leak_rate=get("LEAK_RATE", "10", _positive_float, "requests per second, a number > 0"),
        rate_rules=get(
            "LB_RATE_RULES",
            DEFAULT_RULES,
            parse_rules,
            "METHOD PATH_PREFIX=CAPACITY/RATE rules separated by ';'",
        ),
        rate_dry_run=get("LB_RATE_DRY_RUN", "0", _bool, "0 or 1"),
        redis_url=get("REDIS_URL", "", _redis_url, "a redis:// or rediss:// URL, or empty"),
        redis_cluster=get("LB_REDIS_CLUSTER", "0", _bool, "0 or 1"),
        redis_failure=get(
            "LB_REDIS_FAILURE", "local", _choice(REDIS_FAILURE_MODES), "one of local, open, closed"
        ),
        redis_timeout=get("LB_REDIS_TIMEOUT", "0.05", _positive_float, positive),
        trusted_proxies=get(
            "LB_TRUSTED_PROXIES", "", _networks, "comma-separated CIDRs, e.g. 10.0.0.0/8"
        ),
        log_level=get(
            "LB_LOG_LEVEL",
            "INFO",
            _choice(("DEBUG", "INFO", "WARNING", "ERROR")),
            "one of DEBUG, INFO, WARNING, ERROR",
        ),
        access_log=get("LB_ACCESS_LOG", "1", _bool, "0 or 1"),
        prometheus_dir=get("PROMETHEUS_MULTIPROC_DIR", "", str.strip, "a directory path"),
        cache_bytes=get("LB_CACHE_BYTES", "0", _int_at_least(0), "a byte count >= 0 (0: off)"),
        cache_max_entry_bytes=get(
            "LB_CACHE_MAX_ENTRY_BYTES", str(1024 * 1024), _int_at_least(1), "a byte count >= 1"
        ),
        cache_lock_timeout=get("LB_CACHE_LOCK_TIMEOUT", "5", _positive_float, positive),
        admin_token=get(
            "LB_ADMIN_TOKEN", "", _token, "empty, or a token of 16+ printable characters"
        ),
    )
    return check_settings(settings)


def check_settings(settings: Settings) -> Settings:
    """Checks that involve more than one variable."""
    if settings.limit_max < settings.limit_min:
        raise ConfigError(
            "LB_LIMIT_MAX",
            str(settings.limit_max),
            f"a whole number >= LB_LIMIT_MIN ({settings.limit_min})",
        )
    if settings.critical_reserve >= 1:
        raise ConfigError("LB_CRITICAL_RESERVE", str(settings.critical_reserve), "a ratio below 1")
    return settings


def _token(text: str) -> str | None:
    token = text.strip()
    if not token:
        return None
    if len(token) < 16 or not token.isprintable():
        raise ValueError
    return token


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and # comments skipped; quotes around a value dropped).

    ConfigError (naming LB_ENV_FILE and the line) when the file cannot be read or a line
    is not KEY=VALUE.
    """
    try:
        text = open(path, encoding="utf-8").read()  # noqa: SIM115 - read at once
    except OSError as exc:
        raise ConfigError("LB_ENV_FILE", path, "a readable file", detail=str(exc)) from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(
                "LB_ENV_FILE", path, "KEY=VALUE lines", detail=f"line {number} is not KEY=VALUE"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def effective_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with LB_ENV_FILE's lines on top (the file wins): read at start and
    on every reload (SIGHUP), so editing the file and sending SIGHUP changes the lb."""
    merged = dict(environ)
    path = environ.get("LB_ENV_FILE", "").strip()
    if path:
        merged.update(read_env_file(path))
    return merged


def admission_options(settings: Settings) -> AdmissionOptions:
    """The part of the settings admission control works from."""
    return AdmissionOptions(
        bucket_capacity=settings.bucket_capacity,
        leak_rate=settings.leak_rate,
        rules=settings.rate_rules,
        dry_run=settings.rate_dry_run,
        redis_url=settings.redis_url,
        redis_cluster=settings.redis_cluster,
        redis_failure=settings.redis_failure,
        redis_timeout=settings.redis_timeout,
    )
