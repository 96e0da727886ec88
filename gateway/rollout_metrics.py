"""The rollout metrics (SPEC 13): every decision a rollout controller takes, and the
canary's current share of live traffic."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "gateway_rollout_transitions",
            "Rollout decisions, by model, canary version and the state it moved to "
            "(stepping, promoted, rolled_back, aborted, extended)",
            ["model", "version", "to"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "gateway_rollout_canary_weight",
            "The canary's share of live traffic (0-100) as its rollout's state has it "
            "(every worker sets it from the state it follows, so they agree)",
            ["model", "version"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )

    def moved(self, model: str, version: int, to: str, weight: float) -> None:
        """A decision, counted once: by the worker that took it."""
        self.transitions.labels(model, str(version), to).inc()
        self.canary_weight.labels(model, str(version)).set(weight)

    def follows(self, model: str, version: int, weight: float) -> None:
        self.canary_weight.labels(model, str(version)).set(weight)
