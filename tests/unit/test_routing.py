"""Routing decisions: weighted splits, sticky keys, minimal movement, plan validation."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from gateway.errors import InvalidRequest
from gateway.routing.plan import RoutePlan
from gateway.routing.router import DEFAULT, Decision, by_input, choose, route, shadow_drawn

KEYS = [f"user-{i}" for i in range(5000)]


def plan(**weights: float) -> RoutePlan:
    return RoutePlan(weights=tuple(sorted((int(k[1:]), w) for k, w in weights.items())))


def shares(counts: Counter[int | None], total: int) -> dict[int | None, float]:
    return {version: count / total for version, count in counts.items()}


def test_sticky_split_follows_the_weights() -> None:
    counts = Counter(choose(plan(v1=90, v2=10), key) for key in KEYS)
    got = shares(counts, len(KEYS))
    assert got[1] == pytest.approx(0.9, abs=0.03) and got[2] == pytest.approx(0.1, abs=0.03)


def test_random_split_follows_the_weights() -> None:
    rng = random.Random(3)
    counts = Counter(choose(plan(v1=1, v2=1, v3=2), None, rng) for _ in range(4000))
    got = shares(counts, 4000)
    assert got[1] == pytest.approx(0.25, abs=0.03)
    assert got[3] == pytest.approx(0.5, abs=0.03)


def test_same_key_same_version() -> None:
    routes = plan(v1=50, v2=50)
    for key in KEYS[:200]:
        assert len({choose(routes, key) for _ in range(5)}) == 1


def test_a_weight_change_moves_only_the_keys_it_must() -> None:
    before = {key: choose(plan(v1=90, v2=10), key) for key in KEYS}
    after = {key: choose(plan(v1=80, v2=20), key) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(before[k] == 1 and after[k] == 2 for k in moved)  # only towards v2
    assert len(moved) / len(KEYS) == pytest.approx(0.10, abs=0.02)


def test_adding_weight_to_one_version_never_moves_keys_between_the_others() -> None:
    before = {key: choose(plan(v1=40, v2=40, v3=20), key) for key in KEYS}
    after = {key: choose(plan(v1=40, v2=40, v3=40), key) for key in KEYS}
    assert all(after[k] in (before[k], 3) for k in KEYS)


def test_single_version_and_empty_plans() -> None:
    assert choose(plan(v4=1), "x") == 4
    assert choose(RoutePlan(), "x") is None


def test_shadow_fraction() -> None:
    rng = random.Random(5)
    half = RoutePlan(weights=((1, 1.0),), shadow_version=2, shadow_fraction=0.5)
    drawn = sum(shadow_drawn(half, rng) for _ in range(4000))
    assert drawn / 4000 == pytest.approx(0.5, abs=0.03)
    assert shadow_drawn(RoutePlan(weights=((1, 1.0),)), rng) is False
    always = RoutePlan(weights=((1, 1.0),), shadow_version=2, shadow_fraction=1.0)
    assert all(shadow_drawn(always, rng) for _ in range(100))


def no_headers(name: str) -> str | None:
    return None


def test_route_a_named_version_bypasses_routing() -> None:
    shadowed = RoutePlan(weights=((1, 1.0),), shadow_version=2, shadow_fraction=1.0)
    assert route(shadowed, 7, [1, 2], no_headers, []) == Decision(7, reason="explicit")
    assert route(None, 1, [1, 2], no_headers, []) == Decision(1, reason="explicit")


def test_route_without_a_plan_goes_to_the_default() -> None:
    assert route(None, None, [1, 2], no_headers, []) == DEFAULT
    assert DEFAULT.version is None and DEFAULT.shadow is None


def test_route_weights_shadow_and_sticky_header() -> None:
    sticky = RoutePlan(
        weights=((1, 1.0), (2, 1.0)),
        sticky_key="x-user",
        shadow_version=3,
        shadow_fraction=1.0,
    )
    for user in KEYS[:50]:
        decided = route(sticky, None, [1, 2, 3], {"x-user": user}.get, ["a"])
        assert decided == Decision(choose(sticky, user), 3, None, "sticky")
    # without the header the draw is random, the shadow still drawn
    rng = random.Random(1)
    drawn = [route(sticky, None, [1, 2, 3], no_headers, ["a"], rng) for _ in range(50)]
    assert {d.version for d in drawn} == {1, 2} and {d.reason for d in drawn} == {"weights"}
    rolling = replace(sticky, rollout=True)  # weights a running rollout set
    assert route(rolling, None, [1, 2, 3], no_headers, ["a"]).reason == "rollout"


def test_route_a_sticky_input_is_decided_once_the_body_is_read() -> None:
    by_user = RoutePlan(weights=((1, 1.0), (2, 1.0)), sticky_key="user")
    decided = route(by_user, None, [1, 2], {"user": "from-a-header"}.get, ["user", "a"])
    assert decided.key_input == "user" and decided.version in (1, 2)  # provisional
    for user in KEYS[:50]:
        assert by_input(by_user, [1, 2], user) == choose(by_user, user)
    assert by_input(None, [1, 2], "anyone") is None


def test_route_falls_back_when_the_choice_is_not_loaded() -> None:
    shadow_only = RoutePlan(shadow_version=3, shadow_fraction=1.0)
    # no weights: the highest version but the shadow takes the traffic
    assert route(shadow_only, None, [1, 2, 3], no_headers, []) == Decision(2, 3)
    assert route(shadow_only, None, [3], no_headers, []) == Decision(None, 3)
    gone = RoutePlan(weights=((4, 1.0),))
    assert route(gone, None, [1, 2], no_headers, []).version is None  # the default serves


def test_plan_from_json_round_trip() -> None:
    document = {
        "weights": {"1": 90, "2": 10},
        "sticky_key": "X-User-Id",
        "shadow": {"version": 3, "fraction": 0.25},
    }
    parsed, problems = RoutePlan.from_json(document).validate({1, 2, 3}, {"a", "b"})
    assert problems == []
    assert parsed.weights == ((1, 1.0), (2, 10 / 90))  # scaled: the largest is 1.0
    assert parsed.declared == ((1, 90.0), (2, 10.0))
    assert parsed.sticky_key == "x-user-id"  # header names are case-insensitive
    assert parsed.to_json() == {
        "weights": {"1": 90.0, "2": 10.0},
        "sticky_key": "x-user-id",
        "shadow": {"version": 3, "fraction": 0.25},
    }
    assert parsed.problems({1, 2}) == ["shadow version 3 is not loaded"]
    assert parsed.problems({1, 2, 3}) == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "routing must be a JSON object"),
        ({"weights": {"1": -1}}, "greater than or equal to 0"),
        ({"weights": {"1": 0, "2": 0}}, "positive sum"),
        ({"weights": {"one": 1}}, "keyed by version numbers"),
        ({"weights": {"1": 1}, "shadow": {"version": 1}}, "a shadow must be a different version"),
        ({"weights": {"1": 1}, "shadow": {"fraction": 0.5}}, "shadow.version"),
        ({"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 1.5}}, "less than or equal"),
        ({"weight": {"1": 1}}, 'routing must name "weights"'),
        ({"weights": {"1": 1}, "weight": 1}, "weight: Extra inputs are not permitted"),
    ],
)
def test_invalid_plans_say_why(document: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        RoutePlan.from_json(document)
    assert message in caught.value.message


# -- validation: complete before a plan applies (SPEC 4, 10) ---------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"weights": {}}, "weights is empty; name at least one version with a positive weight"),
        ({}, 'routing must name "weights" (or a "shadow")'),
        ({"sticky_key": "x-user-id"}, 'routing must name "weights"'),
        ({"weights": {"1": float("inf")}}, "weights.1: Input should be a finite number"),
        ({"weights": {"1": float("nan"), "2": 1}}, "weights.1: Input should be a finite number"),
        ({"weights": {"1" * 19: 1}}, "at most 18 digits"),
        ({"weights": {"1": True}}, "weights.1: Input should be a valid number"),
        ({"weights": {"1": 1}, "sticky_key": ""}, "at least 1 character"),
        ({"weights": {"1": 1}, "sticky_key": "k" * 257}, "at most 256 characters"),
    ],
)
def test_invalid_routing_documents_say_why(document: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        RoutePlan.from_json(document)
    assert caught.value.status == 400
    assert message in caught.value.message


def test_zero_weights_are_kept_as_declared_and_take_no_traffic() -> None:
    parsed = RoutePlan.from_json({"weights": {"1": 0, "2": 100}})
    assert parsed.to_json() == {"weights": {"1": 0.0, "2": 100.0}}
    assert parsed.weights == ((2, 1.0),)
    assert {choose(parsed, key) for key in KEYS[:100]} == {2}
    assert parsed.problems({2}) == ["version 1 is not loaded"]  # named, so it must be loaded


def test_huge_weights_are_normalised_before_they_can_overflow() -> None:
    parsed = RoutePlan.from_json({"weights": {"1": 1e308, "2": 1e308}})
    assert parsed.weights == ((1, 1.0), (2, 1.0))
    assert parsed.to_json()["weights"] == {"1": 1e308, "2": 1e308}
    sticky = Counter(choose(parsed, key) for key in KEYS)
    assert sticky[1] / len(KEYS) == pytest.approx(0.5, abs=0.03)
    rng = random.Random(7)
    drawn = Counter(choose(parsed, None, rng) for _ in range(4000))
    assert drawn[1] / 4000 == pytest.approx(0.5, abs=0.03)
    tiny = RoutePlan.from_json({"weights": {"1": 5e-324, "2": 1e308}})
    assert tiny.weights == ((2, 1.0),)  # 5e-324 / 1e308 is 0: no share at all


def test_normalising_does_not_move_sticky_keys() -> None:
    declared = RoutePlan.from_json({"weights": {"1": 90, "2": 10}})
    assert {k: choose(declared, k) for k in KEYS} == {
        k: choose(plan(v1=90, v2=10), k) for k in KEYS
    }


@pytest.mark.parametrize(
    ("key", "inputs", "applied"),
    [
        ("X-User-Id", {"a"}, "x-user-id"),  # a header: case-insensitive, kept lower-case
        ("a", {"a", "b"}, "a"),  # an input
        ("Ключ", {"Ключ"}, "Ключ"),  # an input may have any name, and keeps its case
        ("User", {"User"}, "User"),
        ("user_id", {"user_id"}, "user_id"),  # the [features] entity input
    ],
)
def test_sticky_key_is_an_input_name_or_a_header_token(
    key: str, inputs: set[str], applied: str
) -> None:
    checked, problems = RoutePlan.from_json({"weights": {"1": 1}, "sticky_key": key}).validate(
        {1}, inputs
    )
    assert problems == [] and checked.sticky_key == applied


@pytest.mark.parametrize("key", ["ключ", "x user", "x-user-id\r\n", "a:b", "é"])
def test_sticky_key_that_is_neither_input_nor_header_is_refused(key: str) -> None:
    _, problems = RoutePlan.from_json({"weights": {"1": 1}, "sticky_key": key}).validate(
        {1}, {"a", "b"}
    )
    assert len(problems) == 1
    assert "is neither an input of the model (inputs: 'a', 'b')" in problems[0]
    assert "nor an HTTP header name" in problems[0]


def test_validation_lists_every_problem_at_once() -> None:
    document = {"weights": {"1": 1, "4": 0}, "sticky_key": "ключ", "shadow": {"version": 5}}
    _, problems = RoutePlan.from_json(document).validate({1}, {"a"})
    assert problems[:2] == ["version 4 is not loaded", "shadow version 5 is not loaded"]
    assert "sticky_key" in problems[2]
