"""A replica's own defences: no secret key, no start (one line); Secure cookies behind a TLS
front; Django's technical pages never through the public lb; request heads as large as the lb
lets through are accepted (the lb, not gunicorn's HTML, answers oversized ones); the workers
yield the CPU to the lb (GUNICORN_NICE)."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from ops.processes import descendants
from tests.support.net import free_port
from tests.support.processes import ROOT, python

pytestmark = [pytest.mark.postgres, pytest.mark.processes]


def gunicorn_alone(
    env: dict[str, str], unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """A replica started with `env` (over this process's, less `unset`) on a free port, run
    until it exits (at most 60 s): for settings that must stop it at once."""
    full = {**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{free_port()}"}
    for name in (*unset, "PROMETHEUS_MULTIPROC_DIR"):
        full.pop(name, None)
    return subprocess.run(
        python("-m", "gunicorn", "-c", "backend/gunicorn.conf.py", "backend.wsgi"),
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("debug", ["0", "1"])
def test_a_replica_without_a_secret_key_exits_with_one_line(
    module_backend_env: dict[str, str], debug: str
) -> None:
    assert "DJANGO_SECRET_KEY" in module_backend_env
    done = gunicorn_alone({**module_backend_env, "DJANGO_DEBUG": debug}, ("DJANGO_SECRET_KEY",))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("backend: configuration error: DJANGO_SECRET_KEY is unset")


@pytest.fixture(scope="module")
def debug_base(module_replicas: Any, module_backend_env: dict[str, str]) -> str:
    """A replica as `ops up` runs it: DJANGO_DEBUG=1."""
    return str(module_replicas(1, extra_env={"DJANGO_DEBUG": "1"})[0])


def _admin_login_page(base: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{base}/admin/login/", headers=headers, timeout=30)


def test_session_and_csrf_cookies_are_secure_behind_tls(debug_base: str) -> None:
    tls = _admin_login_page(debug_base, {"X-Forwarded-Proto": "https"})
    assert tls.status_code == 200
    cookie = tls.headers["Set-Cookie"]
    assert "csrftoken=" in cookie and re.search(r"(?i);\s*secure", cookie), cookie
    # plain HTTP (the local stack): a Secure cookie would never come back, so none is set
    plain = _admin_login_page(debug_base, {"X-Forwarded-Proto": "http"})
    assert "csrftoken=" in plain.headers["Set-Cookie"]
    assert not re.search(r"(?i);\s*secure", plain.headers["Set-Cookie"])


def test_secure_cookies_can_be_forced(module_replicas: Any) -> None:
    (base,) = module_replicas(1, extra_env={"DJANGO_SECURE_COOKIES": "always"})
    plain = _admin_login_page(base, {})
    assert re.search(r"(?i);\s*secure", plain.headers["Set-Cookie"])


def test_technical_pages_never_go_through_the_lb_even_with_debug(
    debug_base: str, module_backend_env: dict[str, str], api_client: Any
) -> None:
    staff = requests.Session()
    api_client.staff(debug_base, module_backend_env, username="debug-staff")
    page = staff.get(f"{debug_base}/admin/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token
    from tests.backend.conftest import STAFF_PASSWORD

    logged_in = staff.post(
        f"{debug_base}/admin/login/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": "debug-staff",
            "password": STAFF_PASSWORD,
        },
        allow_redirects=False,
        timeout=30,
    )
    assert logged_in.status_code == 302
    # directly on the replica (an operator, DEBUG on): Django's technical 404 page
    direct = staff.get(f"{debug_base}/admin/no-such-page/", timeout=30)
    assert direct.status_code == 404 and "text/html" in direct.headers["Content-Type"]
    assert "URLconf" in direct.text
    # through the lb (it always sets X-Forwarded-For): the JSON error, nothing more
    public = staff.get(
        f"{debug_base}/admin/no-such-page/",
        headers={"X-Forwarded-For": "203.0.113.9"},
        timeout=30,
    )
    assert public.status_code == 404
    assert public.json() == {"detail": "Not Found.", "code": "not_found"}
    assert "URLconf" not in public.text
    # the admin itself still works through the lb
    index = staff.get(
        f"{debug_base}/admin/", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30
    )
    assert index.status_code == 200 and "text/html" in index.headers["Content-Type"]


def _raw_get(base: str, headers: dict[str, str], path: str = "/api/tours/") -> Any:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        conn.close()


def test_request_heads_as_large_as_the_lb_allows_are_accepted(debug_base: str) -> None:
    """LB_MAX_HEADER_BYTES is 16384 by default: a head just under it (one 15 KiB field, a
    long request line, many fields) must reach Django, not gunicorn's HTML 400/414/431."""
    status, ctype, _ = _raw_get(debug_base, {"X-Big": "a" * 15000})
    assert status == 200 and "json" in ctype
    status, ctype, _ = _raw_get(debug_base, {}, path="/api/tours/?pad=" + "b" * 12000)
    assert status == 200 and "json" in ctype
    many = {f"X-Field-{i}": "v" for i in range(600)}
    status, ctype, _ = _raw_get(debug_base, many)
    assert status == 200 and "json" in ctype


def test_replica_workers_run_niced_so_the_lb_on_their_host_runs_first(
    module_replicas: Any,
) -> None:
    """Past capacity the replicas' threads would take every core and the lb's answers, its
    503s included, would queue behind them (seconds at 10x in the overload bench)."""
    module_replicas(1)
    master = module_replicas.processes[-1].pid
    workers = descendants(master)
    assert workers
    base = os.getpriority(os.PRIO_PROCESS, master)
    assert [os.getpriority(os.PRIO_PROCESS, w) for w in workers] == [min(19, base + 5)] * len(
        workers
    )


def test_a_bad_niceness_stops_the_replica_with_one_line(module_backend_env: dict[str, str]) -> None:
    done = gunicorn_alone({**module_backend_env, "GUNICORN_NICE": "-5"})
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "GUNICORN_NICE='-5': expected a whole number from 0 to 19"
    ]
