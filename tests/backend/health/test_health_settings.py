"""Settings readers (pure): a bad value names the variable, the value and what is expected."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from backend.common.env import env_bool, env_int, env_list, env_str


def test_bool_int_list_str_readers() -> None:
    env = {"A": "1", "B": "off", "N": "7", "L": " a, b ,,c ", "S": "  x  ", "E": ""}
    assert env_bool(env, "A", False) is True
    assert env_bool(env, "B", True) is False
    assert env_bool(env, "MISSING", True) is True
    assert env_int(env, "N", 1) == 7
    assert env_int(env, "E", 3) == 3
    assert env_list(env, "L", []) == ["a", "b", "c"]
    assert env_list(env, "E", ["d"]) == ["d"]
    assert env_str(env, "S") == "x"
    assert env_str(env, "E", "dflt") == "dflt"


@pytest.mark.parametrize(
    ("reader", "value", "expected"),
    [
        (lambda env: env_bool(env, "V", False), "maybe", "V='maybe': expected 0 or 1"),
        (lambda env: env_int(env, "V", 1), "ten", "V='ten': expected an integer"),
        (lambda env: env_int(env, "V", 1, minimum=1), "0", "V='0': expected an integer >= 1"),
    ],
)
def test_bad_values_raise_one_clear_line(reader: object, value: str, expected: str) -> None:
    with pytest.raises(ImproperlyConfigured) as caught:
        reader({"V": value})  # type: ignore[operator]
    assert str(caught.value) == expected
