"""Domain errors of reviews."""

from __future__ import annotations

from backend.common.errors import Conflict, DomainError


class AlreadyReviewed(Conflict):
    code = "already_reviewed"
    detail = "You already reviewed this tour."


class NotAGuest(DomainError):
    status = 403
    code = "no_confirmed_booking"
    detail = "Only guests with a confirmed booking for this tour can review it."
