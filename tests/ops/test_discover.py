"""The compose lb's backend discovery: a scaled service name becomes LB_BACKENDS."""

from __future__ import annotations

import pytest

from lb.config import load_settings
from ops.deploy.discover import backends_value, parse_service


def test_every_address_of_the_service_becomes_a_backend_once():
    value = backends_value(["172.28.0.7", "172.28.0.5", "172.28.0.7", "fd00::3"], 8000)
    assert value == "http://172.28.0.5:8000,http://172.28.0.7:8000,http://[fd00::3]:8000"
    # and the lb accepts it as LB_BACKENDS
    settings = load_settings({"LB_BACKENDS": value})
    assert [b.port for b in settings.backends] == [8000, 8000, 8000]


def test_bad_service_is_one_clear_line():
    assert parse_service("backend:8000") == ("backend", 8000)
    with pytest.raises(SystemExit, match="LB_BACKEND_SERVICE='backend': expected host:port"):
        parse_service("backend")
