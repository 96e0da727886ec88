"""InferenceService: the transport-agnostic request path.

route (explicit version, else the model's routing, else its highest version) ->
settle the version (sticky by input) -> look up features by entity id, if the
model has [features] -> check the inputs against the signature -> run through
the version's batcher -> pick the outputs -> note the shadow run, if any. HTTP
handlers decode and encode around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.batching.request import Ready
from gateway.batching.ticket import Ticket
from gateway.errors import InvalidRequest
from gateway.features.lookup import FeatureLookup, PendingRows
from gateway.protocol.signature import Signature, check_datatype, check_shape
from gateway.protocol.v2 import InferRequest, RequestedOutput
from gateway.repository.registry import ModelRegistry, ServedModel
from gateway.repository.version import ModelVersion
from gateway.routing.router import mirror
from gateway.routing.shadow import ShadowJob


@dataclass(slots=True)
class InferResult:
    version: ModelVersion
    outputs: list[tuple[str, np.ndarray]]
    binary: list[bool]


@dataclass(slots=True)
class Route:
    """Where a request goes: ``target``, unless the model is sticky by an input, whose
    value (known once the body is decoded) then picks the version."""

    model: str
    target: ModelVersion
    key_input: str | None = None
    shadow: ModelVersion | None = None  # also run the request here, after answering
    mirror: ShadowJob | None = None  # the shadow run to start once the answer is sent
    features: FeatureLookup | None = None  # the model's [features], if it has them
    # this request's rows by where their features came from (a FeatureTally)
    features_store: int = 0
    features_default: int = 0


class InferenceService:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def resolve(self, model: str, version: str | None) -> ModelVersion:
        return self.registry.resolve(model, version)

    def route(
        self, model: str, version: str | None, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> Route:
        """An explicit version bypasses routing; otherwise the model's routing (weights,
        sticky key from a header or an input) or its highest version decides."""
        served = self.registry.model(model)
        plan = served.routing if version is None else None
        features = served.features
        if plan is None:
            return Route(model, self.registry.resolve_in(served, version), features=features)
        shadow = None
        if plan.shadow_version is not None and mirror(plan):
            shadow = served.versions.get(plan.shadow_version)
        if plan.sticky_key is None:
            target = self.registry.resolve_in(served, None)
            return Route(model, target, shadow=shadow, features=features)
        if _is_input(served, plan.sticky_key):
            target = self.registry.resolve_in(served, None)
            return Route(model, target, plan.sticky_key, shadow, features=features)
        target = self.registry.resolve_in(served, None, _header(headers, plan.sticky_key))
        return Route(model, target, shadow=shadow, features=features)

    def look_up_features(
        self,
        route: Route,
        inputs: dict[str, np.ndarray],
        datatypes: dict[str, str],
    ) -> PendingRows | None:
        """Entity ids in, the model's feature input out; a no-op without [features] or
        when the caller sent the features itself. None when done at once (no row needs
        the store); else the rows still to come, for ``infer(ready=...)``: the request
        then waits for them in its batch (see FeatureLookup.start_fill). The route counts
        the rows by source (``features_store``, ``features_default``)."""
        features = route.features
        if features is None or features.entity_input not in inputs:
            return None
        return features.start_fill(inputs, datatypes, route)

    def plan_mirror(
        self,
        route: Route,
        target: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: list[tuple[str, np.ndarray]],
    ) -> None:
        """Remember the shadow run for this request (started after the answer is sent)."""
        if route.shadow is None or route.shadow is target:
            return
        route.mirror = ShadowJob(
            model=route.model,
            request_id="",
            primary=target.label,
            target=route.shadow,
            inputs=inputs,
            output_names=[name for name, _ in outputs],
            primary_outputs=[array for _, array in outputs],
        )

    def settle(self, route: Route, inputs: Mapping[str, np.ndarray]) -> ModelVersion:
        """The final version once the inputs are known (only sticky-by-input changes it)."""
        if route.key_input is None:
            return route.target
        value = inputs.get(route.key_input)
        key = None
        if value is not None and value.size:
            first = value.flat[0]
            key = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
        return self.registry.resolve(route.model, None, key)

    async def infer(
        self,
        target: ModelVersion,
        request: InferRequest,
        ticket: Ticket | None = None,
        gone: Callable[[], bool] | None = None,
        ready: Ready | None = None,
    ) -> InferResult:
        """Run a decoded v2 request on an already resolved version; ``ready``: inputs
        still being completed (features on their way)."""
        signature = target.signature
        check_inputs(signature, request.inputs, request.datatypes)
        check_batch(target, request.inputs)
        names, binary = _select_outputs(signature, request.outputs, request.binary_output)
        arrays = await target.run(request.inputs, names, request.timeout_ms, ticket, gone, ready)
        return InferResult(target, list(zip(names, arrays, strict=True)), binary)

    async def predict(
        self,
        target: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        ticket: Ticket | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> list[tuple[str, np.ndarray]]:
        """Run v1 inputs (already in the model's dtypes) and return every output."""
        signature = target.signature
        for spec in signature.inputs:
            check_shape(spec, inputs[spec.name].shape)
        check_batch(target, inputs)
        names = signature.output_names
        arrays = await target.run(inputs, names, ticket=ticket, gone=gone)
        return list(zip(names, arrays, strict=True))


def _is_input(served: ServedModel, name: str) -> bool:
    """Whether the caller sends ``name`` in the body: a model input, or the entity ids."""
    sample = served.default
    if sample is not None and sample.signature.input(name) is not None:
        return True
    return served.features is not None and served.features.entity_input == name


def _header(headers: Sequence[tuple[bytes, bytes]], name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in headers:
        if key == wanted:
            return value.decode("latin-1")
    return None


def check_inputs(
    signature: Signature, inputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str]
) -> None:
    """Every model input present once, with the model's datatype and a fitting shape."""
    for name, array in inputs.items():
        spec = signature.input(name)
        if spec is None:
            raise InvalidRequest(
                f"unknown input '{name}'; the model's inputs are "
                + ", ".join(f"'{n}'" for n in signature.input_names)
            )
        check_datatype(spec, datatypes[name])
        check_shape(spec, array.shape)
    if len(inputs) != len(signature.inputs):  # every given name is known by now
        missing = [name for name in signature.input_names if name not in inputs]
        raise InvalidRequest(
            "missing input(s) "
            + ", ".join(f"'{n}'" for n in missing)
            + "; the model needs "
            + ", ".join(f"'{s.name}' ({s.datatype} {list(s.shape)})" for s in signature.inputs)
        )


def check_batch(target: ModelVersion, inputs: Mapping[str, np.ndarray]) -> None:
    """Inputs that are batched together must agree on their number of rows."""
    if not target.policy.batching or len(inputs) < 2:
        return
    rows = {name: a.shape[0] for name, a in inputs.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"'{n}' has {r}" for n, r in rows.items())
        raise InvalidRequest(f"inputs must have the same number of rows (batch size): {listed}")


def _select_outputs(
    signature: Signature, requested: Sequence[RequestedOutput] | None, binary_default: bool
) -> tuple[Sequence[str], list[bool]]:
    if requested is None:
        every = signature.output_names
        return every, [binary_default] * len(every)
    if not requested:
        raise InvalidRequest("'outputs' is an empty list; omit it to get every output")
    names: list[str] = []
    binary: list[bool] = []
    for output in requested:
        if signature.output(output.name) is None:
            raise InvalidRequest(
                f"unknown output '{output.name}'; the model's outputs are "
                + ", ".join(f"'{n}'" for n in signature.output_names)
            )
        if output.name in names:
            raise InvalidRequest(f"output '{output.name}' is requested more than once")
        names.append(output.name)
        binary.append(binary_default if output.binary is None else output.binary)
    return names, binary
