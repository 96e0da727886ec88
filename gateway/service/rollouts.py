"""RolloutController: runs the rollouts of SPEC 13 from inside the gateway.

A rollout's state lives in its model's record of the control state (SPEC 11), with
the routing it serves, written together in one change, so every worker and replica
serves the split the rollout is at. Every worker runs a controller, but for each
model only the one holding the lease ``rollout:MODEL`` acts: it renews the lease
every tick (``TICK_S``), and when it dies another takes it over within ``LEASE_S``
and carries on from the recorded state. The holder judges each step at its deadline
on the difference of the gateway's counters over the step (summed over the workers
of its replica), writes the next state, and applies it here at once.

Deadlines are wall-clock times, the one clock the workers and replicas share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gateway.control.records import ModelRecord, rollout_field, routing_field
from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, RolloutConflict
from gateway.metrics import Metrics
from gateway.repository.version import ModelVersion
from gateway.rollout.figures import Counts, counts_of, step_figures
from gateway.rollout.judge import Evaluation, StepFigures
from gateway.rollout.machine import RolloutState, abort, advance, from_json, to_json
from gateway.rollout.spec import RolloutSpec
from gateway.rollout_metrics import RolloutMetrics
from gateway.routing.plan import RoutePlan
from gateway.service.desired_state import StateFollower
from gateway.service.drift import DriftMonitor

log = logging.getLogger("gateway.rollout")

TICK_S = 0.25
LEASE_S = 3.0


class RolloutController:
    def __init__(
        self,
        follower: StateFollower,
        metrics: Metrics,
        rollout_metrics: RolloutMetrics,
        drift: DriftMonitor | None = None,
        clock: Callable[[], float] = time.time,  # deadlines: the clock replicas share
    ) -> None:
        self.follower = follower
        self.store = follower.store
        self.registry = follower.registry
        self.metrics = metrics
        self.rollout_metrics = rollout_metrics
        # the app's, whose figures cover every worker
        self.drift = drift or DriftMonitor(follower.registry)
        self.clock = clock
        self.member = follower.member
        # per model: the step the snapshot is of, and the counts at its start
        self._before: dict[str, tuple[tuple[str, int, float], Counts]] = {}

    # -- the admin API ---------------------------------------------------------------

    async def start(self, model: str, document: Any) -> dict[str, Any]:
        spec = RolloutSpec.from_json(document)
        served = self.registry.model(model)
        if spec.version not in served.versions:
            raise InvalidRequest(
                f"rollout of model '{model}': version {spec.version} is not loaded "
                f"(loaded versions: {', '.join(served.labels) or 'none'})"
            )
        stable = _stable_version(served.routing, served.default)
        if stable is None or stable == spec.version:
            raise InvalidRequest(
                f"rollout of model '{model}': version {spec.version} already takes the "
                "traffic; roll out another version"
            )
        current = (await self.store.read()).get(model, ModelRecord())
        if current.rollout is not None and current.rollout["state"] in ("shadowing", "stepping"):
            raise RolloutConflict(
                f"model '{model}' has a rollout of version {current.rollout['canary']} "
                f"running ({current.rollout['state']}); abort it first with DELETE"
            )
        state = RolloutState.begin(model, stable, spec, self.clock())
        await self._write(state)
        log.info("rollout of model %s version %d started (stable %d)", model, spec.version, stable)
        self.rollout_metrics.moved(model, spec.version, state.phase, state.weight)
        return to_json(state)

    async def status(self, model: str) -> dict[str, Any]:
        self.registry.model(model)
        record = (await self.store.read()).get(model, ModelRecord())
        if record.rollout is None:
            raise ModelNotFound(
                f"model '{model}' has no rollout; start one with POST /admin/models/{model}/rollout"
            )
        return dict(record.rollout)

    async def abort(self, model: str) -> dict[str, Any]:
        document = await self.status(model)
        state = from_json(document)
        if state.finished:
            return document
        aborted = abort(state, self.clock())
        await self._write(aborted)
        self._decided(aborted, aborted.phase, "aborted by DELETE", None)
        return to_json(aborted)

    # -- the controller --------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: every tick, act on each running rollout whose lease this
        worker holds (or takes)."""
        while True:
            try:
                await self.tick()
            except GatewayError as exc:  # the control state is unreachable: wait
                log.debug("rollout tick skipped: %s", exc.message)
            except Exception:  # a controller must outlive a bad tick
                log.exception("rollout controller tick failed")
            await asyncio.sleep(TICK_S)

    async def tick(self) -> None:
        """Act on the records the follower read last (it re-reads them on every
        announced change and twice a second), not on a read of its own."""
        for model, record in self.follower.records.items():
            if record.rollout is None:
                continue
            state = from_json(record.rollout)
            if state.finished:
                self._before.pop(model, None)
                continue
            if not await self.store.hold_lease(f"rollout:{model}", self.member, LEASE_S):
                self._before.pop(model, None)  # another worker judges it
                continue
            await self._act(state)

    async def _act(self, state: RolloutState) -> None:
        model = state.model
        now_counts = counts_of(self.metrics.samples(), model)
        step = (state.phase, state.step, state.started)
        before = self._before.get(model)
        if before is None or before[0] != step:
            # a new step, or a lease taken over mid-step: count from now on
            self._before[model] = (step, now_counts)
            return
        now = self.clock()
        if now < state.deadline:
            return
        figures = step_figures(
            before[1], now_counts, str(state.canary), str(state.stable), state.phase == "shadowing"
        )
        figures = _with_psi(figures, self.drift, state)
        moved, judged = advance(state, now, figures)
        if judged is None:
            return
        await self._write(moved)
        if moved.phase == state.phase and moved.step == state.step:
            self._decided(moved, "extended", "too few requests", judged.evaluation)
        else:
            self._before.pop(model, None)
            self._decided(moved, moved.phase, judged.evaluation.verdict, judged.evaluation)

    async def _write(self, state: RolloutState) -> None:
        """The rollout's new state and the routing it serves, in one change; applied here
        at once, in the other workers and replicas within a second."""
        fields = {**rollout_field(to_json(state)), **routing_field(state.routing())}
        await self.store.write(state.model, fields)
        await self.follower.sync()

    def _decided(
        self, state: RolloutState, to: str, why: str, evaluation: Evaluation | None
    ) -> None:
        """``to``: where the rollout went (its phase, or ``extended``); ``why``: the
        verdict or request that took it there."""
        gates: dict[str, float | None] = {}
        if evaluation is not None:
            gates = {g.name: g.value for g in evaluation.gates}
        log.info(
            "rollout of model %s version %d: %s -> %s (weight %g); gates %s",
            state.model,
            state.canary,
            why,
            to,
            state.weight,
            gates,
            extra={"model": state.model, "version": state.canary, "to": to, "gates": gates},
        )
        self.rollout_metrics.moved(state.model, state.canary, to, state.weight)


def _stable_version(routing: RoutePlan | None, default: ModelVersion | None) -> int | None:
    """The version that takes the traffic now: the routing's heaviest, else the highest."""
    if routing is not None and routing.weights:
        return max(routing.weights, key=lambda pair: pair[1])[0]
    return None if default is None else default.info.version


def _with_psi(figures: StepFigures, drift: DriftMonitor, state: RolloutState) -> StepFigures:
    """The largest PSI of the canary's outputs against the stable version's over the
    drift window, when both are monitored with shared bins (gateway.service.drift);
    else unknown, and that gate is not judged."""
    report = drift.report(state.model)
    for pair in report["between_versions"]:
        if sorted(pair["versions"]) == sorted([str(state.stable), str(state.canary)]):
            values = list(pair["psi"].values())
            if values:
                return replace(figures, psi=max(values))
    return figures
