"""Retry policy (what may be re-sent) and retry budget (how many re-sends at once)."""

from __future__ import annotations

import pytest

from lb.upstream.backend import Outcome, classify_status
from lb.upstream.retry import RetryBudget, RetryPolicy

policy = RetryPolicy(max_retries=2)


@pytest.mark.parametrize("method", ["GET", "POST", "PATCH", "DELETE"])
def test_a_request_that_never_reached_a_backend_is_always_retried(method: str) -> None:
    assert policy.may_retry(method, False, Outcome.CONNECT_FAILURE, reached_backend=False)


@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.RESET, Outcome.SERVER_ERROR])
def test_post_and_patch_that_reached_a_backend_are_not_resent(outcome: Outcome) -> None:
    assert not policy.may_retry("POST", False, outcome, reached_backend=True)
    assert not policy.may_retry("PATCH", False, outcome, reached_backend=True)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "get"])
@pytest.mark.parametrize("outcome", [Outcome.TIMEOUT, Outcome.RESET, Outcome.SERVER_ERROR])
def test_idempotent_methods_are_retried_after_failures(method: str, outcome: Outcome) -> None:
    assert policy.may_retry(method, False, outcome, reached_backend=True)


def test_an_idempotency_key_makes_a_post_retryable() -> None:
    assert policy.may_retry("POST", True, Outcome.RESET, reached_backend=True)


@pytest.mark.parametrize("outcome", [Outcome.OK, Outcome.BACKPRESSURE, Outcome.CANCELLED])
def test_success_backpressure_and_cancellation_are_never_retried(outcome: Outcome) -> None:
    assert not policy.may_retry("GET", True, outcome, reached_backend=True)


def test_no_retries_when_disabled() -> None:
    off = RetryPolicy(max_retries=0)
    assert not off.may_retry("GET", False, Outcome.CONNECT_FAILURE, reached_backend=False)


def test_attempts_are_bounded_by_max_retries() -> None:
    assert [policy.allows_attempt(n) for n in range(4)] == [True, True, False, False]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (404, Outcome.OK),
        (409, Outcome.OK),
        (500, Outcome.SERVER_ERROR),
        (502, Outcome.SERVER_ERROR),
        (504, Outcome.SERVER_ERROR),
        (429, Outcome.BACKPRESSURE),
        (503, Outcome.BACKPRESSURE),
        (501, Outcome.OK),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_budget_allows_the_minimum_when_traffic_is_low() -> None:
    budget = RetryBudget(ratio=0.2, minimum=3, active_requests=lambda: 2)
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    budget.release()
    assert budget.try_acquire()


def test_budget_is_a_share_of_live_requests_under_load() -> None:
    active = 100
    budget = RetryBudget(ratio=0.2, minimum=3, active_requests=lambda: active)
    granted = sum(budget.try_acquire() for _ in range(50))
    assert granted == 20  # retries cannot multiply an overload
    active = 200
    assert sum(budget.try_acquire() for _ in range(50)) == 20


def test_budget_release_never_goes_negative() -> None:
    budget = RetryBudget(ratio=0.0, minimum=1, active_requests=lambda: 0)
    budget.release()
    assert budget.try_acquire()
    assert not budget.try_acquire()


def test_a_retry_of_a_request_that_never_reached_a_backend_is_always_granted() -> None:
    budget = RetryBudget(ratio=0.2, minimum=1, active_requests=lambda: 0)
    assert budget.try_acquire()
    assert not budget.try_acquire()
    assert budget.try_acquire(reached_backend=False)  # no work was done: no load added
    assert budget.active == 2
    assert not budget.try_acquire()  # it still counts against retries that did reach one
    budget.release()
    budget.release()
    assert budget.active == 0
