"""LB_PRIORITY_RULES: parsing and classifying requests (pure)."""

from __future__ import annotations

import pytest

from lb.admission.rules import RuleError
from lb.config import ConfigError, load_settings
from lb.priority import DEFAULT_PRIORITY_RULES, Classifier, parse_priority_rules


def test_default_rules_put_checkout_first_and_logins_last() -> None:
    classify = Classifier(parse_priority_rules(DEFAULT_PRIORITY_RULES)).classify
    assert classify("POST", "/api/bookings/") == "critical"
    assert classify("POST", "/api/bookings/5b1c/pay/") == "critical"
    assert classify("POST", "/api/bookings/5b1c/cancel/") == "critical"
    assert classify("GET", "/api/bookings/") == "normal"
    assert classify("GET", "/api/tours/") == "normal"
    assert classify("POST", "/api/auth/token/") == "low"
    assert classify("POST", "/api/auth/register/") == "low"


def test_longest_prefix_wins_and_a_named_method_beats_star() -> None:
    rules = parse_priority_rules("* /api/=low; GET /api/=critical; * /api/tours/=normal")
    classify = Classifier(rules).classify
    assert classify("GET", "/api/x") == "critical"
    assert classify("POST", "/api/x") == "low"
    assert classify("POST", "/api/tours/1/") == "normal"
    assert classify("GET", "/other") == "normal"  # nothing matched


@pytest.mark.parametrize(
    "text",
    ["GET /api/=urgent", "FETCH /=low", "GET api/=low", "GET /=low; GET /=normal", "GET=low"],
)
def test_bad_rules_are_refused_with_what_is_expected(text: str) -> None:
    with pytest.raises(RuleError):
        parse_priority_rules(text)
    with pytest.raises(ConfigError) as caught:
        load_settings({"LB_PRIORITY_RULES": text})
    assert "LB_PRIORITY_RULES" in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [
        {"LB_LIMIT_MIN": "0"},
        {"LB_LIMIT_MIN": "10", "LB_LIMIT_MAX": "5"},
        {"LB_QUEUE_DELAY": "0"},
        {"LB_CRITICAL_RESERVE": "1"},
        {"LB_CRITICAL_RESERVE": "-0.1"},
    ],
)
def test_bad_overload_settings_stop_the_lb(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert next(iter(env if len(env) == 1 else ["LB_LIMIT_MAX"])) in str(caught.value)
