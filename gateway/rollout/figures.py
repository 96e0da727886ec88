"""A step's figures from the gateway's own counters: a snapshot of one model's request,
latency and shadow counts at a step's start, another at its end, and the difference.

The counters are cumulative and, with several workers, already summed over all of
them (prometheus-client's multiprocess files), so a step's figures are ``after -
before``. p99 comes from the latency histogram's buckets, estimated as Prometheus's
``histogram_quantile`` does (linear within the bucket that holds it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.rollout.judge import StepFigures

# (metric sample name, its labels, its value), as a Prometheus exposition holds them
Sample = tuple[str, Mapping[str, str], float]
K = TypeVar("K")
# a p99 needs a hundred requests before it says more than "the slowest one"
MIN_LATENCY_SAMPLES = 100


@dataclass(frozen=True, slots=True)
class Counts:
    """One model's cumulative counts at one moment, by version."""

    requests: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)  # 5xx answers
    buckets: Mapping[str, Mapping[float, float]] = field(default_factory=dict)  # le -> count
    shadow_runs: Mapping[tuple[str, str], float] = field(default_factory=dict)
    disagreements: Mapping[tuple[str, str], float] = field(default_factory=dict)
    shadow_errors: Mapping[tuple[str, str], float] = field(default_factory=dict)


def counts_of(samples: Iterable[Sample], model: str) -> Counts:
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    runs: dict[tuple[str, str], float] = {}
    disagreements: dict[tuple[str, str], float] = {}
    shadow_errors: dict[tuple[str, str], float] = {}
    for name, labels, value in samples:
        if labels.get("model") != model:
            continue
        if name == "gateway_requests_total":
            version = labels["version"]
            requests[version] = requests.get(version, 0.0) + value
            if labels.get("code", "").startswith("5"):
                errors[version] = errors.get(version, 0.0) + value
        elif name == "gateway_request_duration_seconds_bucket":
            per_version = buckets.setdefault(labels["version"], {})
            bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            per_version[bound] = per_version.get(bound, 0.0) + value
        elif name in _SHADOW:
            pair = (labels["primary"], labels["shadow"])
            target = {"runs": runs, "disagreements": disagreements, "errors": shadow_errors}
            table = target[_SHADOW[name]]
            table[pair] = table.get(pair, 0.0) + value
    return Counts(requests, errors, buckets, runs, disagreements, shadow_errors)


_SHADOW = {
    "gateway_shadow_requests_total": "runs",
    "gateway_shadow_disagreements_total": "disagreements",
    "gateway_shadow_errors_total": "errors",
}


def step_figures(
    before: Counts, after: Counts, canary: str, stable: str, shadowing: bool
) -> StepFigures:
    """What happened between two snapshots. While shadowing, the canary's "requests"
    are its shadow runs (it answers nobody); its errors, the shadow runs that failed."""
    pair = (stable, canary)
    reverse = (canary, stable)  # at a 100% step the stable version is the shadow
    runs = _delta(before.shadow_runs, after.shadow_runs, pair) + _delta(
        before.shadow_runs, after.shadow_runs, reverse
    )
    disagreements = _delta(before.disagreements, after.disagreements, pair) + _delta(
        before.disagreements, after.disagreements, reverse
    )
    if shadowing:
        requests = _delta(before.shadow_runs, after.shadow_runs, pair)
        errors = _delta(before.shadow_errors, after.shadow_errors, pair)
    else:
        requests = _delta(before.requests, after.requests, canary)
        errors = _delta(before.errors, after.errors, canary)
    return StepFigures(
        requests=int(requests),
        errors=int(errors),
        canary_p99_s=_p99(before, after, canary),
        stable_p99_s=_p99(before, after, stable),
        shadow_runs=int(runs),
        disagreements=int(disagreements),
    )


def _delta(before: Mapping[K, float], after: Mapping[K, float], key: K) -> float:
    return max(after.get(key, 0.0) - before.get(key, 0.0), 0.0)


def _p99(before: Counts, after: Counts, version: str) -> float | None:
    """The version's p99 over the step; unknown below ``MIN_LATENCY_SAMPLES`` requests,
    where it would be little more than the slowest one."""
    earlier = before.buckets.get(version, {})
    later = after.buckets.get(version, {})
    cumulative = sorted((bound, count - earlier.get(bound, 0.0)) for bound, count in later.items())
    if not cumulative or cumulative[-1][1] < MIN_LATENCY_SAMPLES:
        return None
    return histogram_quantile(0.99, cumulative)


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count) pairs in
    order, interpolated linearly within its bucket (None without observations). A
    quantile in the +Inf bucket is the largest finite bound."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def added(first: Counts, second: Counts) -> Counts:
    """Two sets of counts as one (two replicas' together)."""
    return Counts(
        _sum(first.requests, second.requests),
        _sum(first.errors, second.errors),
        {
            version: _sum(first.buckets.get(version, {}), second.buckets.get(version, {}))
            for version in {*first.buckets, *second.buckets}
        },
        _sum(first.shadow_runs, second.shadow_runs),
        _sum(first.disagreements, second.disagreements),
        _sum(first.shadow_errors, second.shadow_errors),
    )


def _sum(first: Mapping[K, float], second: Mapping[K, float]) -> dict[K, float]:
    total = dict(first)
    for key, value in second.items():
        total[key] = total.get(key, 0.0) + value
    return total


def counts_to_json(counts: Counts) -> dict[str, Any]:
    """What a replica shares in the control state (JSON has no tuple or float keys)."""
    return {
        "requests": dict(counts.requests),
        "errors": dict(counts.errors),
        "buckets": {v: [[b, c] for b, c in sorted(bs.items())] for v, bs in counts.buckets.items()},
        "shadow_runs": [[*pair, n] for pair, n in counts.shadow_runs.items()],
        "disagreements": [[*pair, n] for pair, n in counts.disagreements.items()],
        "shadow_errors": [[*pair, n] for pair, n in counts.shadow_errors.items()],
    }


def counts_from_json(document: Mapping[str, Any]) -> Counts:
    """The inverse of ``counts_to_json``; raises KeyError, TypeError or ValueError on a
    document that is not one."""

    def pairs(name: str) -> dict[tuple[str, str], float]:
        return {(str(p), str(s)): float(n) for p, s, n in document[name]}

    return Counts(
        {str(v): float(n) for v, n in document["requests"].items()},
        {str(v): float(n) for v, n in document["errors"].items()},
        {
            str(v): {math.inf if b is None else float(b): float(c) for b, c in bs}
            for v, bs in document["buckets"].items()
        },
        pairs("shadow_runs"),
        pairs("disagreements"),
        pairs("shadow_errors"),
    )


def across_replicas(
    before: Mapping[str, Counts], after: Mapping[str, Counts]
) -> tuple[Counts, Counts]:
    """Every replica's counts at a step's start and now, as one pair to subtract. A
    replica that joined during the step counts from zero; one that left is left out
    of both (what it served is lost with it, rather than read as a negative count)."""
    total_before, total_after = Counts(), Counts()
    for replica, now in after.items():
        total_after = added(total_after, now)
        if replica in before:
            total_before = added(total_before, before[replica])
    return total_before, total_after
