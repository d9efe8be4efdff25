"""Domain errors of the booking lifecycle (stable codes, rendered by the one exception handler)."""

from __future__ import annotations

from backend.common.errors import Conflict, DomainError, NotFound


class BookingNotFound(NotFound):
    code = "not_found"
    detail = "No booking with this id."


class TourNotFound(NotFound):
    code = "not_found"
    detail = "No tour with this id."


class SoldOut(Conflict):
    code = "sold_out"
    detail = "Not enough seats left on this tour."


class AlreadyBooked(Conflict):
    code = "already_booked"
    detail = "You already hold an active booking for this tour."


class TourStarted(Conflict):
    code = "tour_started"
    detail = "This tour has already started."


class BookingNotPayable(Conflict):
    code = "booking_not_payable"
    detail = "This booking can no longer be paid."


class BookingExpired(Conflict):
    code = "booking_expired"
    detail = "The hold on this booking expired; its seats were released."


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"
    detail = "A request with this Idempotency-Key is still being processed; retry later."


class IdempotencyMismatch(DomainError):
    status = 422
    code = "idempotency_key_reused"
    detail = "This Idempotency-Key was already used with a different request body."
