"""Pure checks of the input guards: JSON nesting measured without recursion, ASCII-only number
fields, the login back-off schedule and its bookkeeping on a cache with a fake clock."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache

from backend.accounts.guard import Backoff, LoginGuard, address_key
from tests.support.clock import FakeClock

# DRF reads the Django settings when its modules are imported: the parser tests import it
# inside, after `django_orm` configured Django with the backend's own settings
pytestmark = pytest.mark.postgres


def test_nesting_depth_ignores_brackets_in_strings_and_stops_early(django_orm: Any) -> None:
    from backend.common.parsers import nesting_depth

    assert nesting_depth('{"a": [1, {"b": "[[[[[[[[["}]}', 50) == 3
    assert nesting_depth(r'["\"[[[[", [[]]]', 50) == 3
    assert nesting_depth("[" * 100_000 + "]" * 100_000, 10) == 11
    assert nesting_depth("1", 5) == 0
    # escaped backslashes and quotes do not end or start a string
    assert nesting_depth(r'["a\\", [[]]]', 50) == 3
    assert nesting_depth(r'["\\\"[", [1]]', 50) == 2
    assert nesting_depth(b"[[],[[]],[]]", 10) == 3


def test_loads_limited_refuses_deep_and_malformed_json_with_parse_errors(django_orm: Any) -> None:
    from rest_framework import exceptions

    from backend.common.parsers import loads_limited

    assert loads_limited('{"a": [[1]]}', max_depth=3) == {"a": [[1]]}
    for bad in ("[" * 5000 + "]" * 5000, '{"a":' * 4 + "1" + "}" * 4):
        with pytest.raises(exceptions.ParseError, match="nested deeper than 3"):
            loads_limited(bad, max_depth=3)
    for bad in ("NaN", '{"a": Infinity}', "9" * 5000, "{", b"\xff"):
        with pytest.raises(exceptions.ParseError):
            loads_limited(bad, max_depth=3)


def test_the_parser_enforces_the_size_and_depth_settings(django_orm: Any) -> None:
    from django.conf import settings
    from django.test import override_settings
    from rest_framework import exceptions

    from backend.common.parsers import JSONParser

    assert (
        settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"][0] == "backend.common.parsers.JSONParser"
    )
    parser = JSONParser()
    assert parser.parse(io.BytesIO(json.dumps({"seats": 2}).encode())) == {"seats": 2}
    with override_settings(JSON_MAX_DEPTH=8, DATA_UPLOAD_MAX_MEMORY_SIZE=1024):
        assert parser.parse(io.BytesIO(b"[" * 8 + b"]" * 8)) == [[[[[[[[]]]]]]]]
        with pytest.raises(exceptions.ParseError):
            parser.parse(io.BytesIO(b"[" * 9 + b"]" * 9))
        with pytest.raises(exceptions.APIException) as too_big:
            parser.parse(io.BytesIO(b'"' + b"a" * 2000 + b'"'))
    assert too_big.value.status_code == 413


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("IntegerField", "42", "\u0664\u0662"),
        ("IntegerField", 42, "4\u00b2"),
        ("DecimalField", "10.50", "\u0661\u0660.50"),
        ("DateField", "2030-06-01", "\u0662030-06-01"),
        ("UUIDField", "12345678-1234-5678-1234-567812345678", "\u0661" * 32),
    ],
)
def test_number_fields_read_ascii_digits_only(
    django_orm: Any, kind: str, good: object, bad: str
) -> None:
    from rest_framework import exceptions

    from backend.common import fields

    options = {"max_digits": 6, "decimal_places": 2} if kind == "DecimalField" else {}
    field = getattr(fields, kind)(**options)
    field.to_internal_value(good)
    with pytest.raises(exceptions.ValidationError) as error:
        field.to_internal_value(bad)
    assert "ASCII" in str(error.value.detail)
    assert fields.is_ascii_digits("0123") and not fields.is_ascii_digits("12\u00b3")
    # the plain DRF field would have read it: this is what the subclass is for
    if kind == "IntegerField" and bad.isdecimal():
        from rest_framework import serializers

        assert serializers.IntegerField().to_internal_value(bad) == 42


def test_backoff_doubles_after_the_free_failures_up_to_the_cap() -> None:
    backoff = Backoff(free_failures=3, base_seconds=2, max_seconds=30)
    assert [backoff.lock_seconds(n) for n in range(1, 9)] == [0, 0, 0, 2, 4, 8, 16, 30]
    assert backoff.lock_seconds(10_000) == 30


def test_the_guard_locks_per_account_and_per_address_and_forgets_on_success() -> None:
    clock = FakeClock()
    guard = LoginGuard(
        LocMemCache("guard-test", {}),
        account=Backoff(2, 1, 60),
        address=Backoff(4, 1, 60),
        window_seconds=600,
        clock=clock,
    )
    for _ in range(2):
        guard.failed("alice", "10.0.0.1")
    assert guard.retry_after("alice", "10.0.0.1") == 0
    guard.failed("Alice", "10.0.0.1")  # the same account, whatever the case
    assert guard.retry_after("alice", "10.0.0.2") == 1
    assert guard.retry_after("bob", "10.0.0.2") == 0
    clock.advance(1.5)
    guard.failed("alice", "10.0.0.2")
    assert guard.retry_after("alice", "10.0.0.3") == 2
    clock.advance(2.5)
    guard.succeeded("alice")
    assert guard.retry_after("alice", "10.0.0.3") == 0
    # one address trying many accounts: locked after its own free failures
    for name in ("c1", "c2", "c3", "c4"):
        guard.failed(name, "10.0.0.9")
    assert guard.retry_after("someone-new", "10.0.0.9") == 0
    guard.failed("c5", "10.0.0.9")
    assert guard.retry_after("someone-new", "10.0.0.9") == 1
    assert guard.retry_after("someone-new", "10.0.0.8") == 0


def test_ipv6_clients_count_by_their_64() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("192.0.2.1") != address_key("192.0.2.2")


class BrokenCache(LocMemCache):
    """A cache whose server is gone: every call fails as redis-py would."""

    def get_many(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Connection refused")

    def add(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Connection refused")

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Connection refused")


def test_a_failing_cache_leaves_logins_unguarded_rather_than_broken() -> None:
    guard = LoginGuard(
        BrokenCache("broken", {}),
        account=Backoff(1, 1, 60),
        address=Backoff(1, 1, 60),
        window_seconds=600,
        clock=FakeClock(),
    )
    for _ in range(5):
        guard.failed("alice", "10.0.0.1")
    assert guard.retry_after("alice", "10.0.0.1") == 0
    guard.succeeded("alice")


def test_every_input_serializer_reads_numbers_dates_and_ids_through_the_ascii_fields(
    django_orm: Any,
) -> None:
    """A plain DRF number/date/id field on an input would accept "٣" as 3 again."""
    import importlib
    import pkgutil

    from rest_framework import serializers

    import backend

    for module in pkgutil.walk_packages(backend.__path__, "backend."):
        if module.name.endswith(".serializers"):
            importlib.import_module(module.name)
    risky = (
        serializers.IntegerField,
        serializers.DecimalField,
        serializers.FloatField,
        serializers.DateField,
        serializers.DateTimeField,
        serializers.UUIDField,
    )

    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    checked = 0
    for cls in subclasses(serializers.Serializer):
        if not cls.__module__.startswith("backend.") or cls.__name__.endswith("Output"):
            continue  # (response shapes are named *Output and never read input)
        for name, field in cls._declared_fields.items():
            if field.read_only or not isinstance(field, risky):
                continue
            assert type(field).__module__ == "backend.common.fields", f"{cls.__name__}.{name}"
            checked += 1
    assert checked >= 12
