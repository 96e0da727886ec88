"""Choosing the versions for a request: ``route`` is the one call the service makes.

The primary version is deterministic for a sticky key and random without one.

Sticky keys use weighted rendezvous hashing: every (key, version) pair gets a
pseudo-random score scaled by the version's weight, and the highest score wins.
The same key picks the same version while the weights stay the same, and a
change of weights moves only the keys it has to: raising one version's weight
moves keys to it, never between the others.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from hashlib import blake2b

from gateway.routing.plan import RoutePlan

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes. ``version``: the primary, or None for the model's
    default (its highest loaded version). ``shadow``: a version that also runs the
    request once the caller has its answer. ``key_input``: the sticky key is this
    input of the body, so the primary is chosen again (``by_input``) once it is
    decoded; until then ``version`` is a provisional draw whose signature decodes it.
    ``reason``: why this version (the payload log's ``routing``): ``explicit`` (named
    by the caller), ``default`` (no weights: the highest version), ``weights``,
    ``sticky`` (a sticky key picked it) or ``rollout`` (a running rollout's weights)."""

    version: int | None
    shadow: int | None = None
    key_input: str | None = None
    reason: str = "default"


DEFAULT = Decision(None)


def route(
    plan: RoutePlan | None,
    named: int | None,
    loaded: Collection[int],
    header: Callable[[str], str | None],
    inputs: Collection[str],
    rng: random.Random | None = None,
) -> Decision:
    """The routing choice for a request to a model whose routing is ``plan``.

    ``named``: the version the caller named (it bypasses routing: no weights, no
    shadow). ``loaded``: the versions that serve. ``header(name)``: a request header's
    value. ``inputs``: what a caller may send in the body (a sticky key among them is
    read from the body, else from the header of that name)."""
    if named is not None:
        return Decision(named, reason="explicit")
    if plan is None:
        return DEFAULT
    shadow = plan.shadow_version if shadow_drawn(plan, rng) else None
    key = plan.sticky_key
    key_input = None
    sticky = None
    if key is not None:
        if key in inputs:
            key_input = key
        else:
            sticky = header(key)
    return Decision(_primary(plan, loaded, sticky, rng), shadow, key_input, reason_of(plan, sticky))


def reason_of(plan: RoutePlan, sticky: str | None) -> str:
    """Why ``plan`` sent a request where it did (``Decision.reason``)."""
    if plan.rollout:
        return "rollout"
    if not plan.weights:
        return "default"
    return "sticky" if sticky is not None else "weights"


def by_input(plan: RoutePlan | None, loaded: Collection[int], value: str | None) -> int | None:
    """The primary once the sticky input's ``value`` is known (None: not sent)."""
    if plan is None:
        return None
    return _primary(plan, loaded, value, None)


def _primary(
    plan: RoutePlan, loaded: Collection[int], sticky: str | None, rng: random.Random | None
) -> int | None:
    number = choose(plan, sticky, rng)
    if number is None:  # a shadow but no weights: the highest version but the shadow
        number = max((v for v in loaded if v != plan.shadow_version), default=None)
    return number if number in loaded else None


def choose(plan: RoutePlan, key: str | None, rng: random.Random | None = None) -> int | None:
    """The primary version for a request, or None when the plan names no weights."""
    weights = plan.weights
    if not weights:
        return None
    if len(weights) == 1:
        return weights[0][0]
    if key is None:
        draw = (rng or random).random() * sum(w for _, w in weights)
        for version, weight in weights:
            draw -= weight
            if draw < 0:
                return version
        return weights[-1][0]
    best, best_score = weights[0][0], -math.inf
    for version, weight in weights:
        score = weight / -math.log(_uniform(key, version))
        if score > best_score:
            best, best_score = version, score
    return best


def shadow_drawn(plan: RoutePlan, rng: random.Random | None = None) -> bool:
    """Whether this request also goes to the shadow version (``shadow_fraction`` of them)."""
    if plan.shadow_version is None or plan.shadow_fraction <= 0:
        return False
    return plan.shadow_fraction >= 1 or (rng or random).random() < plan.shadow_fraction


def _uniform(key: str, version: int) -> float:
    """A stable number in (0, 1) for the pair."""
    digest = blake2b(f"{version}\0{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE
