"""The booking site in a real headless Chromium, through the lb of a local `ops up` stack.

Each test is one customer's story; screenshots of every page land in var/screenshots/.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    STAFF_PASSWORD,
    USER_PASSWORD,
    Customer,
    SiteStack,
    shoot,
)
from tests.lb.conftest import start_lb

pytestmark = [pytest.mark.processes, pytest.mark.slow]

Open = Callable[..., Customer]


def register(c: Customer, shots: str = "") -> str:
    name = f"web_{uuid.uuid4().hex[:10]}"
    c.go("/register/")
    if shots:
        shoot(c.page, shots)
    c.page.get_by_label("Username").fill(name)
    c.page.get_by_label("Email").fill(f"{name}@example.com")
    c.page.get_by_label("Password").fill(USER_PASSWORD)
    c.page.get_by_role("button", name="Create account").click()
    expect(c.page.get_by_role("button", name=re.compile("Log out"))).to_be_visible()
    return name


def seats_shown(c: Customer) -> int:
    return int(c.page.locator("#seats").get_attribute("data-seats"))


def no_problems(c: Customer, *expected: str) -> None:
    """No console error or page error, except the failed loads a test provoked on purpose."""
    left = [p for p in c.problems if not any(e in p for e in expected)]
    assert left == [], left


def test_ops_up_names_the_site_first(site_stack: SiteStack) -> None:
    deadline = time.monotonic() + 30  # the summary follows the lb's first answers
    while "tourbook stack is up" not in (log := site_stack.process.log(20000)):
        assert time.monotonic() < deadline, log
        time.sleep(0.2)
    rows = log.split("=" * 20 + "\n", 1)[1].splitlines()
    assert rows[0].split() == ["web", "site", f"{site_stack.url}/"]


def test_register_log_in_search_book_pay_see_it_cancel_it(
    customer: Open, site_stack: SiteStack
) -> None:
    c = customer()
    name = register(c, shots="register")
    c.page.get_by_role("button", name=re.compile("Log out")).click()
    expect(c.page.get_by_role("link", name="Log in", exact=True)).to_be_visible()
    c.page.get_by_role("link", name="Log in", exact=True).click()
    shoot(c.page, "login")
    c.page.get_by_label("Username").fill(name)
    c.page.get_by_label("Password").fill(USER_PASSWORD)
    c.page.get_by_role("button", name="Log in").click()

    # home: the sale's hot tours first, then search for one of them
    expect(c.page.get_by_role("heading", name="Black Friday: hot tours")).to_be_visible()
    shoot(c.page, "home")
    c.page.get_by_label("Search").fill("Black Friday Lisbon")
    c.page.get_by_role("button", name="Search").click()
    expect(c.page.locator(".count")).to_have_text("1 tour found")
    c.page.get_by_role("link", name="Black Friday Lisbon Weekend").click()

    # the tour page: book 2 seats
    expect(c.page.get_by_role("heading", name="Black Friday Lisbon Weekend")).to_be_visible()
    before = seats_shown(c)
    shoot(c.page, "tour")
    c.page.get_by_label("Seats").select_option("2")
    c.page.get_by_role("button", name="Book now").click()

    # pending, with its hold counting down; pay with the approved card
    expect(c.page.get_by_role("heading", name="Pay for your booking")).to_be_visible()
    expect(c.page.locator("#status")).to_have_text("pending")
    expect(c.page.locator("#hold")).to_have_text(re.compile(r"^\d+:\d\d more$"))
    shoot(c.page, "booking-pending")
    c.page.get_by_label("Card number").fill("4242 4242 4242 4242")
    c.page.get_by_role("button", name=re.compile(r"^Pay €")).click()
    expect(c.page.get_by_role("heading", name="Booking confirmed")).to_be_visible()
    expect(c.page.locator("#status")).to_have_text("confirmed")
    shoot(c.page, "booking-confirmed")
    reference = c.page.locator("code").inner_text()
    deadline = time.monotonic() + 10  # and its email went out (the console mail backend)
    while f"Your booking {reference} is confirmed" not in site_stack.replica_logs():
        assert time.monotonic() < deadline, "no confirmation email"
        time.sleep(0.2)
    api = site_stack.api()
    assert api.tour_named("Black Friday Lisbon Weekend")["seats_available"] == before - 2

    # my bookings: confirmed; cancel it (with a confirmation step)
    c.page.get_by_role("link", name="My bookings", exact=True).click()
    row = c.page.locator(".row", has_text="Black Friday Lisbon Weekend")
    expect(row.locator(".badge")).to_have_text("confirmed")
    shoot(c.page, "my-bookings")
    row.get_by_role("link", name="Cancel").click()
    expect(c.page.get_by_role("heading", name="Cancel this booking?")).to_be_visible()
    shoot(c.page, "cancel")
    c.page.get_by_role("button", name="Yes, cancel the booking").click()
    expect(c.page.locator(".msg.success")).to_contain_text("cancelled")
    expect(row.locator(".badge")).to_have_text("cancelled")

    # the seats are back on the tour page
    c.page.goto(c.page.url.replace("/bookings/", "/"))  # home
    c.page.get_by_label("Search").fill("Black Friday Lisbon")
    c.page.get_by_role("button", name="Search").click()
    c.page.get_by_role("link", name="Black Friday Lisbon Weekend").click()
    expect(c.page.locator("#seats")).to_have_attribute("data-seats", str(before))
    no_problems(c)


def test_declined_card_shows_why_and_the_booking_stays_payable(customer: Open) -> None:
    c = customer()
    register(c)
    c.page.get_by_label("Search").fill("Black Friday Rome")
    c.page.get_by_role("button", name="Search").click()
    c.page.get_by_role("link", name="Black Friday Rome in a Day").click()
    c.page.get_by_role("button", name="Book now").click()
    c.page.get_by_label("Card number").fill("4000 0000 0000 0002")
    c.page.get_by_role("button", name=re.compile(r"^Pay €")).click()
    expect(c.page.locator("#declined")).to_contain_text("The card was declined")
    expect(c.page.locator("#status")).to_have_text("pending")
    expect(c.page.get_by_role("button", name=re.compile(r"^Pay €"))).to_be_visible()
    shoot(c.page, "booking-declined")
    # still payable: another card goes through
    c.page.get_by_label("Card number").fill("4242424242424242")
    c.page.get_by_role("button", name=re.compile(r"^Pay €")).click()
    expect(c.page.locator("#status")).to_have_text("confirmed")
    # a guest may now review the tour
    c.page.get_by_label("Rating").select_option("4")
    c.page.get_by_label("Comment").fill("Great day out, <b>bold</b> guide.")
    c.page.get_by_role("button", name="Publish review").click()
    expect(c.page.locator(".msg.success")).to_contain_text("review is published")
    expect(c.page.locator(".review", has_text="Great day out")).to_contain_text("<b>bold</b>")
    no_problems(c)


def test_sold_out_tour_offers_no_booking_and_names_are_text(
    customer: Open, site_stack: SiteStack
) -> None:
    staff = site_stack.api().login("staff", STAFF_PASSWORD)
    name = f"<script>window.__xss = 1</script> Sold-out special {uuid.uuid4().hex[:6]}"
    created = staff.call(
        "POST",
        "/api/tours/",
        json={
            "name": name,
            "description": '<img src=x onerror="window.__xss = 2"> Tiny tour.',
            "price": "10.00",
            "start_date": "2031-01-10",
            "end_date": "2031-01-11",
            "capacity": 2,
        },
    )
    assert created.status_code == 201, created.text
    tour = created.json()
    buyer, _ = site_stack.api().new_user()
    booked = buyer.call("POST", "/api/bookings/", json={"tour": tour["id"], "seats": 2})
    assert booked.status_code == 201, booked.text

    c = customer()
    register(c)
    c.go(f"/tours/{tour['id']}/")
    expect(c.page.get_by_role("heading", level=1)).to_have_text(name)
    expect(c.page.locator("#seats")).to_contain_text("Sold out")
    expect(c.page.get_by_role("button", name="Book now")).to_have_count(0)
    expect(c.page.locator("#book-form")).to_have_count(0)
    shoot(c.page, "tour-sold-out")
    assert c.page.evaluate("window.__xss") is None
    # the home page lists it as text too
    c.go("/?search=Sold-out+special")
    expect(c.page.locator(".card h3", has_text="Sold-out special").first).to_contain_text(
        "<script>"
    )
    assert c.page.evaluate("window.__xss") is None
    no_problems(c)


def test_seat_count_follows_another_customers_booking(
    customer: Open, site_stack: SiteStack
) -> None:
    api = site_stack.api()
    tour = api.tour_named("Black Friday Northern Lights")
    c = customer()
    c.go(f"/tours/{tour['id']}/")
    before = seats_shown(c)
    buyer, _ = site_stack.api().new_user()
    booked = buyer.call("POST", "/api/bookings/", json={"tour": tour["id"], "seats": 3})
    assert booked.status_code == 201, booked.text
    # the open page polls a small fragment every 2 s: no reload
    expect(c.page.locator("#seats")).to_have_attribute("data-seats", str(before - 3), timeout=6000)
    no_problems(c)


def test_another_customers_booking_is_not_found_and_forms_need_csrf(
    customer: Open, site_stack: SiteStack
) -> None:
    owner, _ = site_stack.api().new_user()
    tour = owner.tour_named("Black Friday Alps Express")
    booking = owner.call("POST", "/api/bookings/", json={"tour": tour["id"], "seats": 1}).json()

    c = customer()
    register(c)
    response = c.go(f"/bookings/{booking['id']}/")
    assert response.status == 404
    expect(c.page.get_by_role("heading", level=1)).to_have_text("Not found")
    shoot(c.page, "not-found")
    csrf = next(k["value"] for k in c.context.cookies() if k["name"] == "csrftoken")
    html = {"Accept": "text/html", "X-CSRFToken": csrf, "Referer": c.base + "/"}
    for action in ("cancel", "pay"):
        tried = c.page.request.post(
            f"{c.base}/bookings/{booking['id']}/{action}/",
            headers=html,
            form={"card_number": "4242424242424242"},
        )
        assert tried.status == 404, action
    assert owner.call("GET", f"/api/bookings/{booking['id']}/").json()["status"] == "pending"

    # a form sent without its CSRF token is refused (a page for a browser)
    refused = c.page.request.post(
        f"{c.base}/tours/{tour['id']}/book/", headers={"Accept": "text/html"}, form={"seats": "1"}
    )
    assert refused.status == 403 and "This form has expired" in refused.text()
    cookies = {k["name"]: k for k in c.context.cookies()}
    assert cookies["sessionid"]["httpOnly"] is True
    assert cookies["sessionid"]["sameSite"] == "Lax" and cookies["csrftoken"]["sameSite"] == "Lax"
    no_problems(c, "status of 404")


def test_first_page_load_is_light(customer: Open) -> None:
    c = customer()
    sizes: dict[str, int] = {}

    def count(response: Any) -> None:
        if response.request.resource_type in ("script", "stylesheet"):
            sizes[response.url] = len(response.body())

    c.page.on("response", count)
    c.go("/")
    c.page.wait_for_load_state("networkidle")
    assert any(url.endswith("htmx.min.js") for url in sizes), sizes
    assert all("/static/" in url and url.startswith(c.base) for url in sizes), sizes  # no CDN
    assert sum(sizes.values()) < 150 * 1024, sizes
    no_problems(c)


def test_keyboard_reaches_the_content_with_a_visible_focus(customer: Open) -> None:
    c = customer()
    c.go("/")
    c.page.keyboard.press("Tab")
    focused = c.page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to content"
    outline = c.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    c.page.keyboard.press("Enter")
    assert c.page.evaluate("document.activeElement.id") == "main"
    no_problems(c)


def test_rate_limited_browser_waits_on_a_page_then_gets_through(
    customer: Open, site_stack: SiteStack, tmp_path: Any
) -> None:
    # a tiny bucket: two pages, then one every 2 s (static files are not counted)
    lb = start_lb(
        {
            "LB_BACKENDS": ",".join(site_stack.backends),
            "BUCKET_CAPACITY": "2",
            "LEAK_RATE": "0.5",
            "LB_RATE_RULES": "GET /static/=500/100",
        },
        tmp_path / "tiny-lb.log",
    )
    try:
        c = customer(base=lb.url)
        statuses = [c.go("/").status for _ in range(3)]
        assert statuses == [200, 200, 429], statuses
        expect(c.page.get_by_role("heading", level=1)).to_have_text("Just a moment")
        expect(c.page.locator("#wait")).to_have_text(re.compile(r"^[0-2]$"))
        shoot(c.page, "waiting-page")
        # the page counts down and retries by itself; the retry is admitted
        expect(c.page.get_by_role("heading", name="Black Friday: hot tours")).to_be_visible(
            timeout=15000
        )
        no_problems(c, "status of 429")
    finally:
        lb.process.stop(timeout=15)
