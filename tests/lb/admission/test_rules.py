"""LB_RATE_RULES: parsing, validation at start, and the longest matching prefix (pure)."""

from __future__ import annotations

import pytest

from lb.admission.rules import (
    Rule,
    RuleError,
    RuleSet,
    default_rule,
    format_rules,
    parse_rule,
    parse_rules,
)
from lb.config import ConfigError, load_settings


def test_default_rules_are_the_register_the_login_and_the_static_rule() -> None:
    settings = load_settings({})
    register, login, static = settings.rate_rules
    # the web site's static files: a roomy bucket of their own, GET only
    assert (static.method, static.prefix, static.capacity, static.rate) == (
        "GET",
        "/static/",
        200,
        100.0,
    )
    # logins: a burst of 5, then one every 2 s per client (password guessing is slow)
    assert (login.method, login.prefix, login.capacity, login.rate) == (
        "POST",
        "/api/auth/token/",
        5,
        0.5,
    )
    assert login.policy == '"POST /api/auth/token/";q=5;w=10'
    assert (register.method, register.prefix, register.capacity, register.rate) == (
        "POST",
        "/api/auth/register/",
        2,
        1.0,
    )
    assert register.policy == '"POST /api/auth/register/";q=2;w=2'
    default = default_rule(settings.bucket_capacity, settings.leak_rate)
    assert default == Rule("default", 20, 10.0)
    assert default.policy == '"default";q=20;w=2'


def test_rules_print_back_in_the_environment_grammar() -> None:
    rules = parse_rules("POST /api/auth/register/=2/1; * /api/=50/0.25; GET /x=3/0.1234567891")
    text = format_rules(rules)
    assert text == "POST /api/auth/register/=2/1; * /api/=50/0.25; GET /x=3/0.1234567891"
    assert parse_rules(text) == rules


def test_parse_several_rules_with_spaces_and_case() -> None:
    rules = parse_rules(" post /api/auth/=5/0.5 ; GET /api/tours/=100/50;")
    assert [(r.name, r.capacity, r.rate) for r in rules] == [
        ("POST /api/auth/", 5, 0.5),
        ("GET /api/tours/", 100, 50.0),
    ]
    assert rules[0].policy == '"POST /api/auth/";q=5;w=10'
    assert parse_rules("") == ()


@pytest.mark.parametrize(
    "text",
    [
        "POST=2/1",
        "POST /x",
        "FETCH /x=2/1",
        "POST x=2/1",
        "POST /x=0/1",
        "POST /x=2/0",
        "POST /x=2/-1",
        "POST /x=2/inf",
        "POST /x=2/nan",
        "POST /x=two/1",
        "POST /x=2",
        'POST /x"y=2/1',
        "POST /x y=2/1",
    ],
)
def test_bad_rules_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(RuleError):
        parse_rule(text)


def test_duplicate_rules_are_refused() -> None:
    with pytest.raises(RuleError, match="twice"):
        parse_rules("POST /x=2/1;post /x=3/1")


def test_a_bad_rule_stops_the_lb_with_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"LB_RATE_RULES": "POST /api/auth/register/=2/0"})
    message = str(info.value)
    assert message.startswith("LB_RATE_RULES=") and "\n" not in message
    for env in ({"BUCKET_CAPACITY": "0"}, {"LEAK_RATE": "-1"}, {"LB_REDIS_FAILURE": "maybe"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            load_settings(env)


def test_longest_prefix_wins_and_method_specific_beats_any() -> None:
    default = Rule("default", 20, 10.0)
    rules = RuleSet(default, parse_rules("* /api/=50/5;POST /api/auth/=5/1;* /api/auth/=9/1"))
    assert rules.match("POST", "/api/auth/register/").name == "POST /api/auth/"
    assert rules.match("GET", "/api/auth/register/").name == "* /api/auth/"
    assert rules.match("GET", "/api/tours/").name == "* /api/"
    assert rules.match("GET", "/static/x.css") is default
    assert rules.all[0] is default


def test_window_is_at_least_one_second() -> None:
    assert Rule("fast", 5, 100.0).policy == '"fast";q=5;w=1'
    assert Rule("slow", 5, 0.3).policy == '"slow";q=5;w=17'
