"""ModelCatalog: what the health, metadata, repository and admin endpoints answer.

Transports ask it and encode the answer; it knows the registry (which models and
versions serve), the desired state every worker follows (runtime changes go there
first, then apply here and, within a second, in every other worker and replica)
and, with several worker processes, whether all of them are ready. Answers are
JSON-ready values; what a caller gets wrong is a GatewayError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.control.records import loaded_field, routing_field
from gateway.errors import InvalidRequest, ModelNotReady, RolloutConflict
from gateway.repository.registry import ModelRegistry
from gateway.repository.served import ServedModel, parse_version
from gateway.rollout.machine import running
from gateway.routing.plan import RoutePlan
from gateway.service.desired_state import StateFollower
from gateway.service.drift import DriftMonitor
from gateway.service.rollouts import RolloutController

JsonObject = dict[str, Any]


class ModelCatalog:
    def __init__(
        self,
        follower: StateFollower,
        peers_ready: Callable[[], bool] | None = None,
        drift: DriftMonitor | None = None,
        rollouts: RolloutController | None = None,
    ) -> None:
        """``peers_ready``: whether every worker process of this gateway is ready (None:
        this process is the only one). ``drift``: the drift figures (SPEC 12)."""
        self.follower = follower
        self.drift_monitor = drift or DriftMonitor(follower.registry)
        self.rollouts = rollouts
        self.registry: ModelRegistry = follower.registry
        self._peers_ready = peers_ready

    # -- health and metadata ---------------------------------------------------------

    def ready(self) -> bool:
        """Some model can answer, with the desired state applied, in every worker: a
        load balancer could reach any."""
        if not (self.registry.state.ready and self.follower.synced):
            return False
        return self._peers_ready is None or self._peers_ready()

    def metadata(self, model: str, version: str | None) -> JsonObject:
        """The model's metadata; for a version, that version's alone (as Triton does).
        A model with [features] names, in ``parameters.features``, the entity input a
        caller may send instead of the input the features fill."""
        served = self.registry.model(model)
        target = served.version(_number(model, version))
        signature = target.signature
        body: JsonObject = {
            "name": model,
            "versions": [target.label] if version is not None else served.labels,
            "platform": "onnxruntime_onnx",
            "inputs": [spec.metadata() for spec in signature.inputs],
            "outputs": [spec.metadata() for spec in signature.outputs],
        }
        if served.features is not None:
            body["parameters"] = {"features": served.features.metadata()}
        return body

    def model_ready(self, model: str, version: str | None) -> JsonObject:
        """Ready, or the GatewayError saying why not (404 unknown, 503 not loaded)."""
        self.registry.resolve(model, version)
        body: JsonObject = {"name": model, "ready": True}
        if version is not None:
            body["version"] = version
        return body

    def version_status(self, model: str, version: str | None) -> list[JsonObject]:
        """TF Serving's model status: the state of each version (or the one named)."""
        served = self.registry.model(model)
        if version is not None:
            served.version(parse_version(model, version))
        rows = [(v, "AVAILABLE", "OK", "") for v in served.versions]
        rows += [(v, "END", "UNKNOWN", why) for v, why in served.failures.items()]
        return [
            {
                "version": str(v),
                "state": state,
                "status": {"error_code": code, "error_message": message},
            }
            for v, state, code, message in sorted(rows, reverse=True)
            if version is None or str(v) == version
        ]

    # -- the repository API (behind the admin token) ---------------------------------

    def index(self, ready_only: bool) -> list[dict[str, str]]:
        rows = self.registry.index()
        return [row for row in rows if row["state"] == "READY"] if ready_only else rows

    async def load(self, name: str) -> JsonObject:
        """(Re)load ``name`` from disk here, and have every worker serve it; 400 saying
        why when no version of it loads."""
        self.require_on_disk_or_loaded(name)
        record = await self.follower.store.write(name, loaded_field(True))
        served = await self.registry.load_model(name)
        await self._follow()
        if not served.ready:
            raise InvalidRequest(
                f"model '{name}' has no version that loads: {served.why_not_ready()}"
            )
        return {"name": name, "versions": served.labels, "generation": record.generation}

    async def unload(self, name: str) -> JsonObject:
        """Stop serving ``name`` in every worker until it is loaded again."""
        self.require(name)
        record = await self.follower.store.write(name, loaded_field(False))
        await self._follow()
        return {"name": name, "unloaded": True, "generation": record.generation}

    def require(self, name: str) -> None:
        """404 unless ``name`` is a model of the repository (before reading a body)."""
        self.registry.model(name)

    def require_on_disk_or_loaded(self, name: str) -> None:
        """For load: a model this worker serves, or one in the repository directory
        (404 saying which are there otherwise)."""
        if name not in self.registry.state.models:
            self.registry.on_disk(name)

    def routing(self, name: str) -> JsonObject:
        """The model's routing as it applies here now, and the generation applied."""
        return self._routing(self.registry.model(name))

    async def set_routing(self, name: str, document: Any) -> JsonObject:
        """Override the model's routing in every worker (the [routing] section as JSON),
        if it applies to the versions loaded here; 400 with every problem otherwise."""
        self.require(name)  # 404 before looking at the document
        plan = self.registry.check_routing(name, RoutePlan.from_json(document))
        await self._no_rollout_running(name)
        await self.follower.store.write(name, routing_field(plan.to_json()))
        await self._follow()
        return self._routing(self.registry.model(name))

    async def reset_routing(self, name: str) -> JsonObject:
        """Back to the routing of the model's model.toml, in every worker."""
        self.require(name)
        await self._no_rollout_running(name)
        await self.follower.store.write(name, routing_field(None))
        await self._follow()
        return self._routing(self.registry.model(name))

    async def _no_rollout_running(self, name: str) -> None:
        """409 while a rollout steers the model's traffic: a routing change would be
        undone at its next step."""
        record = (await self.follower.store.read()).get(name)
        rollout = None if record is None else record.rollout
        if running(rollout):
            raise RolloutConflict(
                f"model '{name}' has a rollout of version {rollout['canary']} running "
                f"({rollout['state']}), which sets its routing until it ends; abort it "
                f"first with DELETE /admin/models/{name}/rollout"
            )

    def drift(self, name: str) -> JsonObject:
        """Per version: its window's rows and each column's PSI against its profile, and
        between live versions, the PSI of their outputs (404 for an unknown model)."""
        return self.drift_monitor.report(name)

    async def start_rollout(self, name: str, document: Any) -> JsonObject:
        """Start rolling ``document``'s version out (SPEC 13): 400 for a bad plan, 409
        while another rollout of the model runs."""
        return await self._rollouts().start(name, document)

    async def rollout(self, name: str) -> JsonObject:
        return await self._rollouts().status(name)

    async def abort_rollout(self, name: str) -> JsonObject:
        return await self._rollouts().abort(name)

    def _rollouts(self) -> RolloutController:
        if self.rollouts is None:
            raise ModelNotReady("rollouts are not running in this process")
        return self.rollouts

    async def state(self) -> JsonObject:
        """The desired state and what each worker (replica/pid) has applied of it."""
        records = await self.follower.store.read()
        members = await self.follower.store.applied()
        names = sorted(set(records) | set(self.registry.state.models))
        models: JsonObject = {}
        for name in names:
            desired = records[name].generation if name in records else 0
            applied = {m.member: m.generations.get(name, 0) for m in members}
            models[name] = {
                **(records[name].to_json() if name in records else {"generation": 0}),
                "applied": applied,
                "converged": all(g >= desired for g in applied.values()),
            }
        return {
            "control": self.follower.store.description,
            "workers": [m.member for m in members],
            "models": models,
        }

    async def _follow(self) -> None:
        """Apply the change just written here at once (the others follow it)."""
        await self.follower.sync()

    def _routing(self, served: ServedModel) -> JsonObject:
        plan = served.routing or RoutePlan()
        generation = self.follower.applied.get(served.name, 0)
        return {"model": served.name, **plan.to_json(), "generation": generation}


def _number(model: str, version: str | None) -> int | None:
    return None if version is None else parse_version(model, version)
