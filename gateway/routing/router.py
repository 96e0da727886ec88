"""Choosing the version for a request: deterministic for a sticky key, random without one.

Sticky keys use weighted rendezvous hashing: every (key, version) pair gets a
pseudo-random score scaled by the version's weight, and the highest score wins.
The same key picks the same version while the weights stay the same, and a
change of weights moves only the keys it has to: raising one version's weight
moves keys to it, never between the others.
"""

from __future__ import annotations

import math
import random
from hashlib import blake2b

from gateway.routing.plan import RoutePlan

_SCALE = float(1 << 64)


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


def mirror(plan: RoutePlan, rng: random.Random | None = None) -> bool:
    """Whether this request also goes to the shadow version."""
    if plan.shadow_version is None or plan.shadow_fraction <= 0:
        return False
    return plan.shadow_fraction >= 1 or (rng or random).random() < plan.shadow_fraction


def _uniform(key: str, version: int) -> float:
    """A stable number in (0, 1) for the pair."""
    digest = blake2b(f"{version}\0{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _SCALE
