"""The one pagination style of every list: page number, `page_size` query param capped at 100.

`page` and `page_size` are whole numbers in ASCII digits; anything else is a 400 naming the
parameter (DRF would pass "٢" to int() and read it as 2, and quietly ignore a bad page size).
"""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from backend.common.errors import ValidationFailed
from backend.common.fields import is_ascii_digits

MAX_PAGE_DIGITS = 6


def query_int(request: Request, name: str) -> int | None:
    """The positive integer in query parameter `name`, None when absent; else a 400."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not is_ascii_digits(raw) or len(raw) > MAX_PAGE_DIGITS or int(raw) < 1:
        raise ValidationFailed(
            errors={name: [f"Enter a whole number from 1 to {10**MAX_PAGE_DIGITS - 1}."]}
        )
    return int(raw)


class StandardPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Request) -> int:
        size = query_int(request, self.page_size_query_param)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_page_number(self, request: Request, paginator: Any) -> int:
        return query_int(request, self.page_query_param) or 1
