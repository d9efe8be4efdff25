"""Names under which Locust records each request, and which threshold group each belongs to."""

from __future__ import annotations

BROWSE = "browse"
BOOKING = "booking"
ACCOUNT = "account"
OTHER = "other"

TOURS_LIST = "tours: list"
TOURS_SEARCH = "tours: search"
TOUR_DETAIL = "tours: detail"
REGISTER = "auth: register"
TOKEN = "auth: token"
BOOKING_CREATE = "bookings: create"
BOOKING_REPLAY = "bookings: replay"
BOOKING_PAY = "bookings: pay"
BOOKING_CANCEL = "bookings: cancel"
REVIEW_CREATE = "reviews: create"
# the web site's pages (backend/site), recorded apart from the API's requests
PAGE_HOME = "pages: home"
PAGE_SEARCH = "pages: search"
PAGE_TOUR = "pages: tour"
PAGE_SEATS = "pages: seats"

GROUPS: dict[str, str] = {
    TOURS_LIST: BROWSE,
    TOURS_SEARCH: BROWSE,
    TOUR_DETAIL: BROWSE,
    PAGE_HOME: BROWSE,
    PAGE_SEARCH: BROWSE,
    PAGE_TOUR: BROWSE,
    PAGE_SEATS: BROWSE,
    REGISTER: ACCOUNT,
    TOKEN: ACCOUNT,
    BOOKING_CREATE: BOOKING,
    BOOKING_REPLAY: BOOKING,
    BOOKING_PAY: BOOKING,
    BOOKING_CANCEL: BOOKING,
    REVIEW_CREATE: OTHER,
}

# An expected outcome (rate limited, sold out, already booked, a declined card) is recorded
# under "<name> [<outcome>]": it is not a failure, and its latency is not the service's.
_EXPECTED_MARK = " ["


def expected(name: str, outcome: str) -> str:
    """The name for an expected, non-failing outcome of request `name`, e.g. a 429."""
    return f"{name}{_EXPECTED_MARK}{outcome}]"


def is_expected(name: str) -> bool:
    return _EXPECTED_MARK in name and name.endswith("]")


def group(name: str) -> str:
    return GROUPS.get(name, OTHER)
