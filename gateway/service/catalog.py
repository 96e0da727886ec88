"""ModelCatalog: what the health, metadata and repository endpoints answer.

Transports ask it and encode the answer; it knows the registry (which models and
versions serve) and, with several worker processes, whether all of them are ready.
Answers are JSON-ready values; what a caller gets wrong is a GatewayError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import InvalidRequest
from gateway.repository.registry import ModelRegistry
from gateway.repository.served import ServedModel, parse_version
from gateway.routing.plan import RoutePlan

JsonObject = dict[str, Any]


class ModelCatalog:
    def __init__(
        self, registry: ModelRegistry, peers_ready: Callable[[], bool] | None = None
    ) -> None:
        """``peers_ready``: whether every worker process of this gateway is ready (None:
        this process is the only one)."""
        self.registry = registry
        self._peers_ready = peers_ready

    # -- health and metadata ---------------------------------------------------------

    def ready(self) -> bool:
        """Some model can answer, in every worker: a load balancer could reach any."""
        if not self.registry.state.ready:
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
        """(Re)load ``name`` from disk; 400 saying why when no version of it loads."""
        served = await self.registry.load_model(name)
        if not served.ready:
            raise InvalidRequest(
                f"model '{name}' has no version that loads: {served.why_not_ready()}"
            )
        return {"name": name, "versions": served.labels}

    async def unload(self, name: str) -> JsonObject:
        await self.registry.unload_model(name)
        return {"name": name, "unloaded": True}

    def require(self, name: str) -> None:
        """404 unless ``name`` is a model of the repository (before reading a body)."""
        self.registry.model(name)

    def routing(self, name: str) -> JsonObject:
        """The model's routing as it applies now (404 for a model that is not there)."""
        return _routing(self.registry.model(name))

    async def set_routing(self, name: str, document: Any) -> JsonObject:
        """Apply a routing document (the [routing] section as JSON) to every version it
        names, atomically; 400 with every problem when it does not apply."""
        self.require(name)  # 404 before looking at the document
        plan = RoutePlan.from_json(document)
        return _routing(await self.registry.set_routing(name, plan))


def _number(model: str, version: str | None) -> int | None:
    return None if version is None else parse_version(model, version)


def _routing(served: ServedModel) -> JsonObject:
    plan = served.routing or RoutePlan()
    return {"model": served.name, **plan.to_json()}
