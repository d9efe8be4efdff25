"""What Black-Friday users do: browsers list, search and open tours; bookers book hot tours.

Browsers load the web site's pages (home, search, a tour page and its live seat count) as
well as the API, as a customer's browser and the site's own scripts do.

Expected outcomes are not failures: a 429 is honoured by waiting its Retry-After and trying
again, 409 sold_out / already_booked and a declined card (402) are part of the day. They are
recorded under their own names (see names.py) so the thresholds judge only real work.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import random
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import gevent
from locust import FastHttpUser, between, task
from locust.contrib.fasthttp import ResponseContextManager

from loadtest import names
from loadtest.profiles import Profile, load_profile

GOOD_CARD = "4242 4242 4242 4242"
DECLINED_CARD = "4000 0000 0000 0002"
HOT_TOUR_QUERY = "Black Friday"
SEARCH_WORDS = ("Black Friday", "tour", "city", "mountain", "sea", "night", "walk")
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SITE_SHARE = 0.5  # of the crowd's views: pages of the web site; the rest are apps on the API
MAX_RETRY_AFTER = 10.0
MAX_ATTEMPTS = 4

PROFILE: Profile = load_profile(os.environ)

# Each simulated user presents its own client address (X-Forwarded-For), so the lb meters
# users separately when it trusts the load generator's address (LB_TRUSTED_PROXIES).
_client_numbers = itertools.count(1)
_CLIENT_NET = ipaddress.ip_network("10.0.0.0/8")


def next_client_ip() -> str:
    return str(_CLIENT_NET[next(_client_numbers) % (_CLIENT_NET.num_addresses - 2) + 1])


def retry_after(headers: Any) -> float:
    """Seconds a 429/503 asks us to wait (Retry-After), within [0.5, MAX_RETRY_AFTER]."""
    try:
        value = float(headers.get("Retry-After") or 1)
    except (TypeError, ValueError):
        value = 1.0
    return min(max(value, 0.5), MAX_RETRY_AFTER)


def error_code(response: ResponseContextManager) -> str:
    try:
        body = response.json()
    except Exception:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


class TourBookUser(FastHttpUser):
    """Shared plumbing: a client address per user, 429 handling, expected outcomes."""

    abstract = True
    wait_time = between(PROFILE.think_min, PROFILE.think_max)

    def on_start(self) -> None:
        self.client_ip = next_client_ip()
        self.token = ""
        self.tour_ids: list[str] = []

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"X-Forwarded-For": self.client_ip, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if extra:
            headers.update(extra)
        return headers

    def call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        expected: Callable[[int, str], str | None] = lambda status, code: None,
    ) -> tuple[int, Any]:
        """One logical request: retried after Retry-After on 429/503, judged on its status.

        `expected(status, code)` names an expected non-2xx outcome (recorded, not failed).
        Returns (status, parsed JSON body or None).
        """
        status, payload, wait = 0, None, 0.0
        for _attempt in range(MAX_ATTEMPTS):
            kwargs: dict[str, Any] = {"headers": self.headers(headers), "name": name}
            if body is not None:
                kwargs["data"] = json.dumps(body)
                kwargs["headers"]["Content-Type"] = "application/json"
            with self.client.request(method, path, catch_response=True, **kwargs) as response:
                status = response.status_code
                code = error_code(response) if status >= 400 else ""
                try:
                    payload = response.json() if response.content else None
                except Exception:
                    payload = None
                if status in ok:
                    response.success()
                    return status, payload
                if status in (429, 503) and response.headers.get("Retry-After"):
                    # back-pressure (rate limited, or the lb shedding load: 503 overloaded):
                    # honoured by waiting Retry-After, not a failure
                    response.request_meta["name"] = names.expected(name, f"{status} {code}".strip())
                    response.success()
                    wait = retry_after(response.headers)
                elif outcome := expected(status, code):
                    response.request_meta["name"] = names.expected(name, outcome)
                    response.success()
                    return status, payload
                else:
                    response.failure(f"{status} {code or (response.text or '')[:120]}")
                    return status, payload
            gevent.sleep(wait)
        return status, payload

    def learn_tours(self, search: str | None = None) -> list[dict[str, Any]]:
        path = "/api/tours/"
        name = names.TOURS_LIST
        if search:
            path += "?" + urlencode({"search": search})
            name = names.TOURS_SEARCH
        status, body = self.call("GET", path, name)
        if status != 200 or not isinstance(body, dict):
            return []
        results = body.get("results", [])
        return [t for t in results if isinstance(t, dict) and "id" in t]


class Browser(TourBookUser):
    """Lists, searches and opens tours; most of the crowd."""

    weight = 3

    @task(4)
    def list_tours(self) -> None:
        if self.tour_ids and self.on_site():
            self.call("GET", "/", names.PAGE_HOME, headers=HTML)
            return
        tours = self.learn_tours()
        if tours:
            self.tour_ids = [t["id"] for t in tours]

    @task(2)
    def search_tours(self) -> None:
        word = random.choice(SEARCH_WORDS)
        if self.tour_ids and self.on_site():
            self.call("GET", "/?" + urlencode({"search": word}), names.PAGE_SEARCH, headers=HTML)
            return
        tours = self.learn_tours(word)
        if tours:
            self.tour_ids = [t["id"] for t in tours]

    @task(5)
    def open_tour(self) -> None:
        if not self.tour_ids:
            self.list_tours()
        if self.tour_ids:
            tour = random.choice(self.tour_ids)
            if self.on_site():
                self.call("GET", f"/tours/{tour}/", names.PAGE_TOUR, headers=HTML)
                # the open page polls its seat count (every 2 s in a browser; once here)
                self.call("GET", f"/tours/{tour}/seats/", names.PAGE_SEATS, headers=HTML)
            else:
                self.call("GET", f"/api/tours/{tour}/", names.TOUR_DETAIL)

    @staticmethod
    def on_site() -> bool:
        """This view is a page of the web site (else an app's API call)."""
        return random.random() < SITE_SHARE


class Booker(TourBookUser):
    """Registers and logs in during the ramp, then books the hot tours: book, pay, cancel, review."""

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.username = f"bf_{uuid.uuid4().hex[:16]}"
        self.password = f"pw-{uuid.uuid4().hex}"
        self.hot_tours: list[str] = []
        self.booked: set[str] = set()
        status, _ = self.call(
            "POST",
            "/api/auth/register/",
            names.REGISTER,
            body={
                "username": self.username,
                "email": f"{self.username}@example.com",
                "password": self.password,
            },
            ok=(201,),
        )
        if status == 201:
            self.login()

    def login(self) -> None:
        status, body = self.call(
            "POST",
            "/api/auth/token/",
            names.TOKEN,
            body={"username": self.username, "password": self.password},
        )
        if status == 200 and isinstance(body, dict):
            self.token = str(body.get("access", ""))

    def find_hot_tours(self) -> None:
        tours = self.learn_tours(HOT_TOUR_QUERY) or self.learn_tours()
        self.hot_tours = [t["id"] for t in tours[: PROFILE.hot_tours]]

    @task
    def book_hot_tour(self) -> None:
        if not self.token:
            return
        if not self.hot_tours:
            self.find_hot_tours()
        tour = self.pick_tour()
        if tour is None:
            return
        booking = self.book(tour)
        if booking is None:
            return
        self.booked.add(tour)
        if not self.pay(booking):
            return
        if random.random() < 0.2:
            self.call("POST", f"/api/bookings/{booking}/cancel/", names.BOOKING_CANCEL, ok=(200,))
            self.booked.discard(tour)
        elif random.random() < 0.5:
            self.call(
                "POST",
                f"/api/tours/{tour}/reviews/",
                names.REVIEW_CREATE,
                body={"rating": random.randint(3, 5), "comment": "Worth the queue."},
                ok=(201,),
                expected=lambda s, c: "409" if s == 409 else None,
            )

    def pick_tour(self) -> str | None:
        """A hot tour not booked yet; once all are, any other tour of the catalogue."""
        candidates = [t for t in self.hot_tours if t not in self.booked]
        if not candidates:
            if not self.tour_ids:
                self.tour_ids = [t["id"] for t in self.learn_tours()]
            candidates = [t for t in self.tour_ids if t not in self.booked]
        return random.choice(candidates) if candidates else None

    def book(self, tour: str) -> str | None:
        """POST a booking with an Idempotency-Key, sometimes resend it; the booking id or None."""
        key = str(uuid.uuid4())
        body = {"tour": tour, "seats": random.choice((1, 1, 1, 2))}

        def sold_out_or_booked(status: int, code: str) -> str | None:
            return code if status == 409 and code in ("sold_out", "already_booked") else None

        status, created = self.call(
            "POST",
            "/api/bookings/",
            names.BOOKING_CREATE,
            body=body,
            headers={"Idempotency-Key": key},
            ok=(201,),
            expected=sold_out_or_booked,
        )
        code = created.get("code") if isinstance(created, dict) else None
        # already booked: move on; sold out: half the crowd keeps refreshing, half gives up
        if status == 409 and (code == "already_booked" or random.random() < 0.5):
            self.booked.add(tour)
        if status != 201 or not isinstance(created, dict):
            return None
        if random.random() < 0.15:
            # a client that lost the answer resends: the first response must come back
            _, replay = self.call(
                "POST",
                "/api/bookings/",
                names.BOOKING_REPLAY,
                body=body,
                headers={"Idempotency-Key": key},
                ok=(201, 200),
                expected=lambda s, c: "409" if s == 409 else None,
            )
            if isinstance(replay, dict) and replay.get("id") not in (None, created.get("id")):
                self.environment.events.request.fire(
                    request_type="CHECK",
                    name="idempotency: same booking",
                    response_time=0,
                    response_length=0,
                    exception=AssertionError("replay returned another booking"),
                    context={},
                )
        return str(created.get("id")) if created.get("id") else None

    def pay(self, booking: str) -> bool:
        if random.random() < 0.05:
            self.call(
                "POST",
                f"/api/bookings/{booking}/pay/",
                names.BOOKING_PAY,
                body={"card_number": DECLINED_CARD},
                ok=(),
                expected=lambda s, c: "402" if s == 402 else None,
            )
        status, _ = self.call(
            "POST",
            f"/api/bookings/{booking}/pay/",
            names.BOOKING_PAY,
            body={"card_number": GOOD_CARD},
        )
        return status == 200
