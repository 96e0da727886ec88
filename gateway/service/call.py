"""InferenceService and InferenceCall: one request, from admission to its record.

A transport (today HTTP) reads and decodes; the call does the rest, in this order::

    call = service.call(protocol, model, version, request_id)  # starts the clock
    call.admit(headers)        # the routing choice: explicit version, weights, sticky
                               # header, shadow; nothing of the body read yet
    ... the transport reads the body ...
    call.arrived()             # routed again if that version was retired meanwhile;
                               # announced to its batcher (a slow body never holds one)
    ... the transport decodes it (v1 with ``call.target.signature``) ...
    running = call.start_v2(decoded_v2, gone)  # or call.start_v1(v1_inputs, gone): a
                               # sticky key in the body picks the version, features are
                               # looked up by entity id, inputs checked, handed to a batch
    answer = call.answer(await running)  # (or both at once: await call.infer(...))
    ... the transport encodes and sends ``answer`` ...
    call.finish(status)        # metrics, the request log line, and the shadow run (200)

Everything a caller can get wrong is a GatewayError, raised by ``admit``, ``start_v2``,
``start_v1`` or the awaited batch; ``finish`` is called whatever happened, once the answer is sent.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from gateway.batching.ticket import Ticket
from gateway.features.lookup import FeatureLookup
from gateway.metrics import Metrics
from gateway.payload.record import PayloadEntry
from gateway.payload.writer import PayloadWriter
from gateway.protocol.signature import check_shape
from gateway.protocol.v2 import InferRequest
from gateway.repository.registry import ModelRegistry
from gateway.repository.served import ServedModel, parse_version
from gateway.repository.version import ModelVersion
from gateway.routing.router import by_input, reason_of, route
from gateway.routing.shadow import ShadowJob, ShadowScheduler
from gateway.service.checks import check_batch, check_inputs, select_outputs
from gateway.service.request_log import log_request

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(slots=True)
class InferResult:
    """An answer: the version that gave it, its outputs and (v2) which go as binary."""

    version: ModelVersion
    outputs: list[tuple[str, np.ndarray]]
    binary: list[bool]


class InferenceService:
    """Admits requests (``call``) and holds what every call records to: the metrics,
    the shadow scheduler and whether the per-request log line is on."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        shadows: ShadowScheduler,
        log_requests: bool = False,
        payload: PayloadWriter | None = None,
        payload_sample: float = 1.0,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.shadows = shadows
        self.log_requests = log_requests
        self.payload = payload  # the payload log, if it is on
        self.payload_sample = payload_sample

    def sampled(self) -> bool:
        """Whether the payload log records this request (``--payload-sample``)."""
        share = self.payload_sample
        return share >= 1.0 or (share > 0.0 and random.random() < share)

    def call(
        self, protocol: str, model: str, version: str | None, request_id: bytes
    ) -> InferenceCall:
        """A request to ``model`` (``version``: the one the caller named, if any); its
        clock starts now. Never raises: even a refused request is recorded by finish."""
        return InferenceCall(self, protocol, model, version, request_id)


class InferenceCall:
    """One request: where it goes, its batcher ticket, its feature counts, the version
    that answered and the shadow run to start after the answer."""

    __slots__ = (
        "_binary",
        "_headers",
        "_names",
        "entity_ids",
        "features",
        "features_default",
        "features_store",
        "key_input",
        "shadow_job",
        "model",
        "protocol",
        "request_id",
        "ran_inputs",
        "ran_outputs",
        "routing",
        "served",
        "service",
        "shadow",
        "started",
        "target",
        "ticket",
        "version",
    )

    service: InferenceService
    protocol: str
    model: str
    version: str | None  # as the caller named it
    request_id: bytes
    started: float
    served: ServedModel | None  # the model as it stood when admitted
    target: ModelVersion | None  # the routed version; once run, the one that answered
    key_input: str | None  # sticky by this input: its value picks the version
    shadow: ModelVersion | None  # also run the request here, after answering
    features: FeatureLookup | None  # the model's [features], if it has them
    # this request's rows by where their features came from (a FeatureTally)
    features_store: int
    features_default: int
    ticket: Ticket | None
    shadow_job: ShadowJob | None  # the shadow run to start once the answer is sent
    routing: str  # why the target: Decision.reason
    # for the payload log, when it is on: what ran and what it answered
    ran_inputs: Mapping[str, np.ndarray] | None
    ran_outputs: list[tuple[str, np.ndarray]] | None
    entity_ids: np.ndarray | None
    _headers: Headers
    _names: Sequence[str]  # the outputs asked for, in the order the batch returns them
    _binary: list[bool]  # (v2) which of them go as binary

    def __init__(
        self,
        service: InferenceService,
        protocol: str,
        model: str,
        version: str | None,
        request_id: bytes,
    ) -> None:
        self.started = perf_counter()
        self.service = service
        self.protocol = protocol
        self.model = model
        self.version = version
        self.request_id = request_id
        self.served = None
        self.target = None
        self.key_input = None
        self.shadow = None
        self.features = None
        self.features_store = 0
        self.features_default = 0
        self.ticket = None
        self.shadow_job = None
        self.routing = "default"
        self.ran_inputs = None
        self.ran_outputs = None
        self.entity_ids = None
        self._headers = ()

    def admit(self, headers: Headers = ()) -> ModelVersion:
        """The routing choice, before the body is read, in one router call: a version
        the caller named bypasses routing; otherwise the model's routing (weights, a
        sticky key from a header or an input, a shadow) or its highest version decides.
        Returns the routed version."""
        self._headers = headers
        served = self.service.registry.model(self.model)
        named = None if self.version is None else parse_version(self.model, self.version)
        decision = route(
            served.routing, named, served.versions, _header_reader(headers), served.caller_inputs
        )
        self.served = served
        self.features = served.features
        self.key_input = decision.key_input
        self.routing = decision.reason
        shadow = decision.shadow
        self.shadow = None if shadow is None else served.versions.get(shadow)
        target = self.target = served.version(decision.version)
        return target

    def arrived(self) -> ModelVersion:
        """The body is here: a version retired while it arrived is routed again, then the
        request is announced to its batcher (a batch being cut may wait a little for
        it). Returns the version whose signature decodes the body."""
        target = self.target
        assert target is not None, "arrived() before admit()"
        if target.retired:
            target = self.admit(self._headers)
        self.ticket = target.expect()
        return target

    async def infer(self, request: InferRequest, gone: Callable[[], bool] | None) -> InferResult:
        """Run a decoded v2 request (``start_v2``, then ``answer``)."""
        return self.answer(await self.start_v2(request, gone))

    async def predict(
        self, inputs: Mapping[str, np.ndarray], gone: Callable[[], bool] | None
    ) -> InferResult:
        """Run v1 inputs (``start_v1``, then ``answer``)."""
        return self.answer(await self.start_v1(inputs, gone))

    def start_v2(
        self, request: InferRequest, gone: Callable[[], bool] | None
    ) -> Awaitable[list[np.ndarray]]:
        """Hand a decoded v2 request to its batch: the version picked again if the sticky
        key is an input, features looked up by entity id (rows still on their way wait
        in their batch), the inputs checked, the requested outputs picked. ``gone``:
        whether the caller left. Returns the batcher's awaitable of the output arrays,
        for ``answer``: the transport awaits it itself, with no coroutine of the call's
        own in between (each level costs every request a suspension and a resumption)."""
        inputs = request.inputs
        target = self.target if self.key_input is None else self._by_input(inputs)
        assert target is not None, "start_v2() before admit()"
        pending = None
        features = self.features
        if features is not None and features.entity_input in inputs:
            self.entity_ids = inputs[features.entity_input]
            pending = features.start_fill(inputs, request.datatypes, self)
        signature = target.signature
        check_inputs(signature, inputs, request.datatypes)
        if len(inputs) > 1:
            check_batch(target, inputs)
        names, self._binary = select_outputs(signature, request.outputs, request.binary_output)
        # the inputs as run: the features are filled in place of the entity ids
        self.ran_inputs, self._names = inputs, names
        return target.run(inputs, names, request.timeout_ms, self.ticket, gone, pending)

    def start_v1(
        self, inputs: Mapping[str, np.ndarray], gone: Callable[[], bool] | None
    ) -> Awaitable[list[np.ndarray]]:
        """Hand v1 inputs (already in the model's dtypes) to their batch, asking for
        every output; as ``start_v2``."""
        target = self._by_input(inputs)
        signature = target.signature
        for spec in signature.inputs:
            check_shape(spec, inputs[spec.name].shape)
        check_batch(target, inputs)
        names = signature.output_names
        self.ran_inputs, self._names, self._binary = inputs, names, []
        return target.run(inputs, names, ticket=self.ticket, gone=gone)

    def answer(self, arrays: list[np.ndarray]) -> InferResult:
        """The answer of the batch ``start_v2``/``start_v1`` handed the request to, its
        shadow run planned (``finish`` starts it)."""
        target, inputs = self.target, self.ran_inputs
        assert target is not None and inputs is not None, "answer() before start"
        outputs = list(zip(self._names, arrays, strict=True))
        if self.shadow is not None:
            self._plan_shadow(target, inputs, outputs)
        self.ran_outputs = outputs
        return InferResult(target, outputs, self._binary)

    @property
    def feature_defaults(self) -> int | None:
        """For a request whose entity ids were looked up, its rows that got the
        [features] defaults; else None."""
        if self.features_store or self.features_default:
            return self.features_default
        return None

    def finish(self, status: int) -> None:
        """The answer (``status``) is sent: the ticket, if still out, is released; a
        shadow run planned for a 200 starts; the metrics and the log line record it."""
        ticket = self.ticket
        if ticket is not None:
            ticket.release()
        service = self.service
        finished = perf_counter()
        entry = None
        if status == 200 and service.payload is not None and service.sampled():
            entry = self._payload_entry(ticket, finished)
        shadow_job = self.shadow_job
        if status == 200 and shadow_job is not None:
            shadow_job.request_id = self.request_id.decode("latin-1")
            if entry is not None:  # the record waits for the shadow's outputs
                shadow_job.on_done = _with_shadow(entry, service.payload, shadow_job)
                entry = None
            service.shadows.try_spawn(shadow_job)
        if entry is not None:
            service.payload.submit(entry)  # type: ignore[union-attr]
        target = self.target
        label = "" if target is None else target.label
        model = self.model
        known = model if model in service.registry.state.models else ""
        elapsed = finished - self.started
        service.metrics.request_done(known, label, self.protocol, status, elapsed)
        if service.log_requests:
            features = None
            if self.features_store or self.features_default:
                features = (self.features_store, self.features_default)
            log_request(
                self.request_id, model, label, self.protocol, status, elapsed, ticket, features
            )

    def _payload_entry(self, ticket: Ticket | None, finished: float) -> PayloadEntry | None:
        target, outputs, inputs = self.target, self.ran_outputs, self.ran_inputs
        if target is None or outputs is None or inputs is None:
            return None
        entry = PayloadEntry(
            finished,
            self.request_id.decode("latin-1"),
            self.model,
            target.label,
            self.routing,
            self.protocol,
            inputs,
            outputs,
        )
        # attributes set one by one: keyword arguments cost this path twice as much
        if ticket is not None:
            entry.queue_s = ticket.queued_s
            entry.inference_s = ticket.ran_s
        features = self.features
        if self.entity_ids is not None and features is not None:
            entry.entity_input = features.entity_input
            entry.entity_ids = self.entity_ids
            entry.rows_from_store = self.features_store
            entry.rows_defaulted = self.features_default
        return entry

    def _by_input(self, inputs: Mapping[str, np.ndarray]) -> ModelVersion:
        """The version that answers, once the inputs are known: only a sticky key that
        is an input changes the one ``admit`` chose. It becomes the call's target."""
        target = self.target
        assert target is not None, "infer() before admit()"
        if self.key_input is not None:
            value = inputs.get(self.key_input)
            key = None
            if value is not None and value.size:
                first = value.flat[0]
                key = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
            served = self.served
            assert served is not None
            target = self.target = served.version(by_input(served.routing, served.versions, key))
            if served.routing is not None:
                self.routing = reason_of(served.routing, key)
        return target

    def _plan_shadow(
        self,
        target: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        outputs: list[tuple[str, np.ndarray]],
    ) -> None:
        """Remember the shadow run for this request (``finish`` starts it)."""
        shadow = self.shadow
        if shadow is None or shadow is target:
            return
        self.shadow_job = ShadowJob(
            model=self.model,
            request_id="",
            primary=target.label,
            target=shadow,
            inputs=inputs,
            output_names=[name for name, _ in outputs],
            primary_outputs=[array for _, array in outputs],
        )


def _with_shadow(
    entry: PayloadEntry, payload: PayloadWriter | None, job: ShadowJob
) -> Callable[[Sequence[np.ndarray] | None, str | None], None]:
    """Completes ``entry`` with the shadow's outputs (or why it has none) and submits it."""

    def done(outputs: Sequence[np.ndarray] | None, error: str | None) -> None:
        entry.shadow_version = job.target.label
        entry.shadow_outputs = outputs
        entry.shadow_error = error
        if payload is not None:
            payload.submit(entry)

    return done


def _header_reader(headers: Headers) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    return header
