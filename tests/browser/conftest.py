"""Browser tests: the web site in Debian's headless Chromium, driven by Playwright, through the lb.

- `site_stack` (module): `python -m ops up` on embedded defaults (SQLite, in-process buckets)
  on free ports, two replicas, the demo data; stopped with Ctrl-C (SIGINT) at the end.
- `browser` (module): `/usr/bin/chromium` (the `chromium` package ./dev installs), never a
  downloaded build; `customer` opens a fresh context (own cookies) as one client address.
- `shoot(page, name)` saves the page at phone (390x844) and desktop (1280x800) width under
  var/screenshots/ (gitignored).
- Every page a test opened must have logged no console error and thrown nothing.
"""

from __future__ import annotations

import itertools
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.net import free_port, free_run
from tests.support.processes import ROOT, Process, python

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "var" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
STAFF_PASSWORD = "Staff-site-pass-3e7a!"
USER_PASSWORD = "Site-user-pass-8c2f!"
REPLICAS = 2

_addresses = itertools.count(10)


def client_address() -> str:
    """A distinct client address per simulated customer (the local lb trusts X-Forwarded-For
    from 127.0.0.1), so each has its own leaky bucket, as real customers do."""
    n = next(_addresses)
    return f"198.51.100.{n % 250 + 1}" if n < 250 else f"203.0.113.{n % 250 + 1}"


@dataclass
class SiteStack:
    url: str
    backends: list[str]
    process: Process
    var: Path

    def replica_logs(self) -> str:
        """What the replicas logged (the local stack's mail backend prints mails there)."""
        return "".join(
            p.read_text(errors="replace") for p in sorted((self.var / "log").glob("backend-*.log"))
        )

    def api(self, address: str | None = None) -> Api:
        return Api(self.url, address or client_address())


@dataclass
class Api:
    """A JSON API client presenting one client address."""

    base: str
    address: str
    token: str = ""
    session: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Forwarded-For": self.address, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.session.request(
            method, f"{self.base}{path}", headers=headers, timeout=15, **kwargs
        )

    def login(self, username: str, password: str) -> Api:
        resp = self.call(
            "POST", "/api/auth/token/", json={"username": username, "password": password}
        )
        assert resp.status_code == 200, resp.text
        self.token = resp.json()["access"]
        return self

    def new_user(self) -> tuple[Api, str]:
        name = f"api_{uuid.uuid4().hex[:10]}"
        resp = self.call(
            "POST",
            "/api/auth/register/",
            json={"username": name, "email": f"{name}@example.com", "password": USER_PASSWORD},
        )
        assert resp.status_code == 201, resp.text
        return self.login(name, USER_PASSWORD), name

    def tour_named(self, name: str) -> dict[str, Any]:
        resp = self.call("GET", "/api/tours/", params={"search": name})
        assert resp.status_code == 200, resp.text
        found = [t for t in resp.json()["results"] if t["name"] == name]
        assert found, f"no tour named {name!r}"
        return found[0]  # type: ignore[no-any-return]


def start_stack(var: Path) -> tuple[Process, str, list[str]]:
    port, admin_port, base = free_port(), free_port(), free_run(REPLICAS)
    env = {
        "DATABASE_URL": "",
        "SHARD_URLS": "",
        "REDIS_URL": "",
        "DJANGO_SETTINGS_MODULE": "",
        "SEED_STAFF_PASSWORD": STAFF_PASSWORD,
        "LB_TRUSTED_PROXIES": "127.0.0.1/32",
        "LB_ACCESS_LOG": "0",
    }
    process = Process(
        python(
            "-m",
            "ops",
            "up",
            "--var",
            str(var),
            "--replicas",
            str(REPLICAS),
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--backend-base-port",
            str(base),
            "--expire-interval",
            "3600",
        ),
        log_path=var / "ops-up.log",
        env=env,
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/api/tours/", timeout=180)
    except BaseException:
        process.signal(signal.SIGINT)
        process.stop(timeout=40)
        raise
    return process, url, [f"http://127.0.0.1:{base + i}" for i in range(REPLICAS)]


@pytest.fixture(scope="module")
def site_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteStack]:
    var = tmp_path_factory.mktemp("site-stack")
    # a free port can still be taken before a replica binds it (another test's client socket
    # borrows it as its local port on this shared machine): then start again on other ports
    for attempt in range(3):
        try:
            process, url, backends = start_stack(var)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield SiteStack(url=url, backends=backends, process=process, var=var)
    finally:
        process.signal(signal.SIGINT)
        process.stop(timeout=40)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is not installed (./dev installs it): apt-get install chromium"
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # a busy CI machine; waits end as soon as they hold

    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # root in CI has no user namespaces for the sandbox; small containers have a tiny /dev/shm
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


@dataclass
class Customer:
    """One browser context (its own cookies) presenting one client address, and its problems."""

    context: Any
    page: Any
    address: str
    problems: list[str]
    base: str

    def go(self, path: str) -> Any:
        return self.page.goto(f"{self.base}{path}")


@pytest.fixture
def customer(browser: Any, site_stack: SiteStack) -> Iterator[Callable[..., Customer]]:
    opened: list[Customer] = []

    def open_one(base: str | None = None, address: str | None = None) -> Customer:
        address = address or client_address()
        context = browser.new_context(
            viewport=DESKTOP, extra_http_headers={"X-Forwarded-For": address}
        )
        page = context.new_page()
        problems: list[str] = []
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        one = Customer(context, page, address, problems, base or site_stack.url)
        opened.append(one)
        return one

    yield open_one
    for one in opened:
        one.context.close()


def shoot(page: Any, name: str) -> None:
    """The page at desktop and at phone width, into var/screenshots/NAME-{desktop,phone}.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
        # the phone layout never scrolls sideways
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name}: {overflow}px wider than a {label} screen"
    page.set_viewport_size(original)
    # screen-reader basics on every page: one h1, every form control has a label
    assert page.locator("h1").count() == 1, f"{name}: one h1 per page"
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.name || el.id)"""
    )
    assert unlabelled == [], f"{name}: controls without a label: {unlabelled}"
