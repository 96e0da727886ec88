"""StateFollower: makes this worker serve the desired state (SPEC 11), and says so.

It reads the control state when a change is announced and at least every
``interval_s``, applies each model record made by another change than the one it
applied last (load or unload, then the runtime routing or model.toml's again), and
reports the generations it has applied, which ``GET /admin/state`` shows. The
request path never reads the control state: applying a change swaps the registry's
immutable state, as any change does.

The control state unreachable: serving goes on with what was applied last, and the
follower catches up once it answers. Until the first read has been applied the
worker is not ready, so a replica that starts never serves an outdated split.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from gateway.control.records import Applied, ModelRecord
from gateway.control.store import ControlStore
from gateway.errors import ControlUnavailable, GatewayError
from gateway.repository.registry import ModelRegistry
from gateway.rollout.machine import running
from gateway.routing.plan import RoutePlan

log = logging.getLogger("gateway.control")

_WARN_EVERY_S = 10.0


class StateFollower:
    def __init__(
        self,
        store: ControlStore,
        registry: ModelRegistry,
        member: str,
        interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.registry = registry
        self.member = member
        self.interval_s = interval_s
        self.applied: dict[str, int] = {}  # generation applied, by model
        self.records: dict[str, ModelRecord] = {}  # as read last
        self._changes: dict[str, str] = {}  # the change id of each of those
        self.synced = False  # the state has been read and applied at least once
        self._lock = asyncio.Lock()
        self._warned = -_WARN_EVERY_S

    async def sync(self) -> dict[str, ModelRecord]:
        """Read the desired state, apply what is newer, report; ControlUnavailable when
        it cannot be read. Returns the records read."""
        async with self._lock:
            records = self.records = await self.store.read()
            for name, record in records.items():
                # the change id, not only the generation: a control state that lost its
                # data (a Redis restarted without persistence) counts from 1 again
                if record.change != self._changes.get(name, ""):
                    await self._apply(name, record)
                    self.applied[name] = record.generation
                    self._changes[name] = record.change
            if not self.synced:
                log.info("control state applied from %s", self.store.description)
            self.synced = True
            await self.store.report(Applied(self.member, dict(self.applied)))
            return records

    async def run(self) -> None:
        """Follow until cancelled."""
        while True:
            try:
                await self.sync()
            except ControlUnavailable as exc:
                now = time.monotonic()
                if now - self._warned >= _WARN_EVERY_S:
                    self._warned = now
                    log.warning("%s", exc.message)
            except Exception:  # following must outlive a bad record or a bug
                log.exception("applying the control state failed; trying again")
            await self.store.wait_changed(self.interval_s)

    async def _apply(self, name: str, record: ModelRecord) -> None:
        registry = self.registry
        served = registry.state.models.get(name)
        if served is None:
            log.warning(
                "model %s: generation %d of the control state names a model this "
                "repository does not have; nothing to apply",
                name,
                record.generation,
            )
            return
        try:
            plan = None if record.routing is None else RoutePlan.from_json(record.routing)
            if plan is not None and running(record.rollout):
                plan = replace(plan, rollout=True)
            if not record.loaded:
                await registry.set_routing(name, plan)  # kept for when it loads again
                await registry.unload_model(name)
            else:
                if served.unloaded:
                    await registry.load_model(name)
                await registry.set_routing(name, plan)
        except GatewayError as exc:
            log.warning(
                "model %s: generation %d of the control state does not apply here: %s",
                name,
                record.generation,
                exc.message,
            )
        else:
            log.info(
                "model %s: applied generation %d of the control state", name, record.generation
            )
