"""RolloutController: runs the rollouts of SPEC 13 from inside the gateway.

A rollout's state lives in its model's record of the control state (SPEC 11), with
the routing it serves, written together in one change, so every worker and replica
serves the split the rollout is at. Every worker runs a controller, but for each
model only the one holding the lease ``rollout:MODEL`` acts: it renews the lease
every tick (``TICK_S``), and when it dies another takes it over within ``LEASE_S``
and carries on from the recorded state. The holder judges each step at its deadline
on the difference of the gateway's counters over the step, writes the next state,
and applies it here at once.

The counters of one replica are summed over its workers (prometheus-client's
multiprocess files); each replica shares that sum on the board ``rollout:MODEL`` of
the control state every ``SHARE_S`` while a rollout runs, so the holder counts every
replica's requests. The output PSI compares the two versions' outputs over the step
as the holder's worker saw them (an ``OutputSample`` of each, set on the versions
while it holds the lease): a distribution, which its share of the traffic estimates.

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
from gateway.monitoring.outputs import OutputSample, output_psi
from gateway.repository.version import ModelVersion
from gateway.rollout.figures import (
    Counts,
    across_replicas,
    counts_from_json,
    counts_of,
    counts_to_json,
    step_figures,
)
from gateway.rollout.judge import Evaluation
from gateway.rollout.machine import (
    RolloutState,
    abort,
    advance,
    from_json,
    running,
    to_json,
)
from gateway.rollout.spec import RolloutSpec
from gateway.rollout_metrics import RolloutMetrics
from gateway.routing.plan import RoutePlan
from gateway.service.desired_state import StateFollower

log = logging.getLogger("gateway.rollout")

TICK_S = 0.25
LEASE_S = 3.0
SHARE_S = 0.5


class RolloutController:
    def __init__(
        self,
        follower: StateFollower,
        replica: str,
        metrics: Metrics,
        rollout_metrics: RolloutMetrics,
        clock: Callable[[], float] = time.time,  # deadlines: the clock replicas share
    ) -> None:
        self.follower = follower
        self.store = follower.store
        self.registry = follower.registry
        self.metrics = metrics
        self.rollout_metrics = rollout_metrics
        self.clock = clock
        self.member = follower.member
        self.replica = replica  # this gateway's name among the replicas
        # per model: the step the snapshot is of, and each replica's counts at its start
        self._before: dict[str, tuple[tuple[str, int, float], dict[str, Counts]]] = {}
        self._shared_at: dict[str, float] = {}  # per model, on the monotonic clock
        self._held: set[str] = set()  # the models whose lease this worker holds
        # per model: the samples of the stable version's and the canary's outputs
        self._samples: dict[str, tuple[OutputSample, OutputSample]] = {}

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
        if running(current.rollout):
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
        document = dict(record.rollout)
        if running(document):
            # the worker judging it (``host/pid``), for an operator to find its log
            document["controller"] = await self.store.lease_holder(f"rollout:{model}")
        return document

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
        try:
            while True:
                try:
                    await self.tick()
                except GatewayError as exc:  # the control state is unreachable: wait
                    log.debug("rollout tick skipped: %s", exc.message)
                except Exception:  # a controller must outlive a bad tick
                    log.exception("rollout controller tick failed")
                await asyncio.sleep(TICK_S)
        finally:
            await self._release_leases()

    async def _release_leases(self) -> None:
        """On the way out, give back the leases held, so that another worker or replica
        takes over at its next tick instead of when they run out."""
        for model in sorted(self._held):
            try:
                async with asyncio.timeout(1.0):
                    await self.store.release_lease(f"rollout:{model}", self.member)
            except (GatewayError, TimeoutError):
                return  # unreachable: the lease runs out by itself

    async def tick(self) -> None:
        """Act on the records the follower read last (it re-reads them on every
        announced change and twice a second), not on a read of its own."""
        for model, record in self.follower.records.items():
            document = record.rollout
            if document is None:
                continue
            if not running(document):  # finished: not parsed again on every tick
                self.rollout_metrics.follows(model, document["canary"], document["weight"])
                self._before.pop(model, None)
                self._shared_at.pop(model, None)
                self._stop_sampling(model)
                if model in self._held:
                    self._held.discard(model)
                    await self.store.release_lease(f"rollout:{model}", self.member)
                continue
            state = from_json(document)
            self.rollout_metrics.follows(model, state.canary, state.weight)
            await self._share(model)
            if not await self.store.hold_lease(f"rollout:{model}", self.member, LEASE_S):
                self._before.pop(model, None)  # another worker judges it
                self._held.discard(model)
                self._stop_sampling(model)
                continue
            self._held.add(model)
            await self._act(state)

    def _mine(self, model: str) -> Counts:
        """This replica's counts now (summed over its workers)."""
        return counts_of(self.metrics.samples(), model)

    async def _share(self, model: str) -> None:
        """This replica's counts on the rollout's board, every ``SHARE_S``."""
        now = time.monotonic()
        if now - self._shared_at.get(model, -SHARE_S) < SHARE_S:
            return
        self._shared_at[model] = now
        await self.store.share(f"rollout:{model}", self.replica, counts_to_json(self._mine(model)))

    async def _every_replica(self, model: str) -> dict[str, Counts]:
        counts = {self.replica: self._mine(model)}
        for replica, document in (await self.store.shared(f"rollout:{model}")).items():
            if replica == self.replica:
                continue
            try:
                counts[replica] = counts_from_json(document)
            except (KeyError, TypeError, ValueError):
                log.warning("rollout of %s: replica %s shared unreadable counts", model, replica)
        return counts

    async def _act(self, state: RolloutState) -> None:
        model = state.model
        step = (state.phase, state.step, state.started)
        before = self._before.get(model)
        if before is None or before[0] != step:
            # a new step, or a lease taken over mid-step: count from now on
            self._before[model] = (step, await self._every_replica(model))
            self._start_sampling(state)
            return
        now = self.clock()
        if now < state.deadline:
            return
        start, end = across_replicas(before[1], await self._every_replica(model))
        figures = step_figures(
            start, end, str(state.canary), str(state.stable), state.phase == "shadowing"
        )
        figures = replace(figures, psi=self._output_psi(state))
        moved, judged = advance(state, now, figures)
        if judged is None:
            return
        await self._write(moved)
        if moved.phase == state.phase and moved.step == state.step:
            self._decided(moved, "extended", "too few requests", judged.evaluation)
        else:
            self._before.pop(model, None)
            self._decided(moved, moved.phase, judged.evaluation.verdict, judged.evaluation)

    def _start_sampling(self, state: RolloutState) -> None:
        """Fresh samples of both versions' outputs, for the step starting now."""
        self._stop_sampling(state.model)
        stable, canary = (
            self._version(state.model, state.stable),
            self._version(state.model, state.canary),
        )
        if stable is None or canary is None:
            return  # unloaded meanwhile: the PSI gate is not judged
        samples = (OutputSample(), OutputSample())
        stable.output_sample, canary.output_sample = samples
        self._samples[state.model] = samples

    def _stop_sampling(self, model: str) -> None:
        if self._samples.pop(model, None) is None:
            return
        served = self.registry.state.models.get(model)
        for version in served.versions.values() if served is not None else ():
            version.output_sample = None

    def _output_psi(self, state: RolloutState) -> float | None:
        """The largest PSI of the canary's outputs against the stable version's over
        the step (bins from the stable version's profile.json where it has one)."""
        samples = self._samples.get(state.model)
        if samples is None:
            return None
        stable = self._version(state.model, state.stable)
        edges = None
        if stable is not None and stable.drift is not None:
            binner = stable.drift.binner
            edges = dict(zip(binner.names, binner.edges_of, strict=True))
        by_column = output_psi(*samples, edges)
        return max(by_column.values(), default=None) if by_column else None

    def _version(self, model: str, number: int) -> ModelVersion | None:
        served = self.registry.state.models.get(model)
        return None if served is None else served.versions.get(number)

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
