"""What the inference handler costs per request, and what each of its steps costs.

    make bench-handler        # or: .venv/bin/python -m loadtests.handler_cost [options]

No network and no HTTP server: the real handler (``InferenceEndpoint.handle``) runs
over the real lifespan state (models, batcher, onnxruntime thread, metrics, routing) on
an in-memory exchange, with ``--concurrency`` requests in flight, as under wrk. Its CPU
time per request is set against two yardsticks:

- ``lean``: the least any batching JSON server does per request: parse the body,
  build the array, hand it to the same batcher (same batches, same onnxruntime runs),
  encode the outputs, answer. No validation, routing, request id, metrics, tickets or
  request record;
- ``at GIT_REF`` (``--baseline``): another commit's handler, for a change's effect;
- ``free:STEP``: the gateway with one step replaced by the least that step can be
  (``FREE_STEPS``), so the difference is that step's cost in place, with every other
  request's work around it (micro-benchmarks of a step alone, with warm caches,
  report a half to a third of that).

Each comparison runs the two variants as two processes at once on one core
(``--cpu``): the neighbours' noise of a shared machine then hits both alike. Each
prints its CPU microseconds per request per round (both threads: the event loop and
the inference thread); the table gives the medians and the median of the per-round
differences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadtests.benchmark import ROOT, _bodies, _pinned, export_tree
from loadtests.reference_models import write_repository

RawHeaders = list[tuple[bytes, bytes]]


class MemoryExchange:
    """An exchange whose body has arrived whole and whose answer is kept, not sent."""

    __slots__ = ("headers", "state", "_body", "status")

    def __init__(self, headers: RawHeaders, state: dict[str, Any], body: bytes) -> None:
        self.headers = headers
        self.state = state
        self._body = body
        self.status = 0

    @property
    def gone(self) -> None:
        return None  # the caller never leaves

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.disconnect"}  # never asked: the body has arrived whole

    def arrived_body(self) -> bytes:
        return self._body

    async def respond(self, status: int, headers: RawHeaders, body: bytes) -> None:
        self.status = status


def _replace(owner: Any, name: str, value: Any) -> None:
    """Put ``value`` in the place of ``owner.name``, which must exist: a step renamed in
    the gateway fails here, not silently."""
    if not hasattr(owner, name):
        raise AttributeError(f"{getattr(owner, '__name__', owner)} has no {name} to replace")
    setattr(owner, name, value)


def _free_metrics() -> None:
    from gateway.metrics import BatchMetrics, Metrics

    def nothing(*args: Any) -> None:
        pass

    _replace(Metrics, "request_done", nothing)  # per request
    _replace(BatchMetrics, "dispatched", nothing)  # per batch
    bound = BatchMetrics.__init__

    def unobserved(self: BatchMetrics, *args: Any) -> None:
        bound(self, *args)
        for name in ("waited", "ran"):  # per request and per batch: set per instance
            _replace(self, name, nothing)

    _replace(BatchMetrics, "__init__", unobserved)


def _free_request_id() -> None:
    from gateway.http import inference

    _replace(inference, "new_request_id", lambda: b"request-1")


def _free_routing() -> None:
    from gateway.repository.version import ModelVersion
    from gateway.service.call import InferenceCall

    def admit(self: InferenceCall, headers: Any = ()) -> ModelVersion:
        served = self.served = self.service.registry.model(self.model)
        target = self.target = served.version(None)
        return target

    _replace(InferenceCall, "admit", admit)


def _free_decode() -> None:
    from gateway.protocol import v2

    def decode(body: bytes, header_length: str | None) -> v2.InferRequest:
        tensor = orjson.loads(body)["inputs"][0]
        array = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        return v2.InferRequest({tensor["name"]: array}, {tensor["name"]: tensor["datatype"]})

    _replace(v2, "decode_request", decode)


def _free_checks() -> None:
    from gateway.protocol.signature import Signature
    from gateway.service import call

    def select(signature: Signature, *args: Any) -> tuple[list[str], list[bool]]:
        names = list(signature.output_names)
        return names, [False] * len(names)

    _replace(call, "check_inputs", lambda *args: None)
    _replace(call, "select_outputs", select)


def _free_encode() -> None:
    from gateway.protocol import v2

    def encode(
        model: str,
        version: str,
        request_id: str | None,
        outputs: list[tuple[str, np.ndarray]],
        binary: list[bool],
    ) -> tuple[bytes, int | None]:
        return _lean_body(model, version, outputs), None

    _replace(v2, "encode_response", encode)


def _free_record() -> None:
    from gateway.service.call import InferenceCall

    def finish(self: InferenceCall, status: int) -> None:
        if self.ticket is not None:
            self.ticket.release()

    _replace(InferenceCall, "finish", finish)


# a step, and the least it can be: the difference is what the step costs
FREE_STEPS: dict[str, Callable[[], None]] = {
    "request-id": _free_request_id,
    "routing": _free_routing,
    "decode": _free_decode,
    "checks": _free_checks,
    "encode": _free_encode,
    "metrics": _free_metrics,
    "record": _free_record,
}
VARIANTS = ["gateway", "lean", *(f"free:{step}" for step in FREE_STEPS)]


def _lean_body(model: str, version: str, outputs: list[tuple[str, np.ndarray]]) -> bytes:
    entries = [
        {"name": name, "datatype": "FP32", "shape": list(array.shape), "data": array.ravel()}
        for name, array in outputs
    ]
    doc = {"model_name": model, "model_version": version, "outputs": entries}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _handler(variant: str, model: str, state: dict[str, Any]) -> Callable[..., Any]:
    """``await handle(exchange)`` for ``variant`` (its free step already patched in)."""
    from gateway.http.inference import INFER_V2

    if variant != "lean":

        async def gateway(exchange: MemoryExchange) -> None:
            await INFER_V2.handle(exchange, model, None)

        return gateway
    version = state["service"].registry.model(model).version(None)
    names = version.signature.output_names

    async def lean(exchange: MemoryExchange) -> None:
        tensor = orjson.loads(exchange.arrived_body())["inputs"][0]
        array = np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        outputs = await version.batcher.submit({tensor["name"]: array}, names)
        body = _lean_body(model, version.label, list(zip(names, outputs, strict=True)))
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await exchange.respond(200, headers, body)

    return lean


async def measure(
    variant: str, model: str, concurrency: int, requests: int, rounds: int, scratch: Path
) -> list[float]:
    """CPU microseconds per request of ``variant``, per round (after one warm-up round)."""
    from gateway.app import create_app
    from gateway.config import Settings

    if variant.startswith("free:"):
        FREE_STEPS[variant.removeprefix("free:")]()
    repository = write_repository(scratch / "models", max_batch_size=32)
    body = _bodies(scratch, [model])[model].read_bytes()
    app: Any = create_app(Settings(model_repository=repository))
    starlette = app.app  # inside InferenceRoutes
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    figures: list[float] = []
    async with starlette.router.lifespan_context(starlette) as state:
        handle = _handler(variant, model, state)

        async def client(count: int) -> None:
            for _ in range(count):
                exchange = MemoryExchange(headers, state, body)
                await handle(exchange)
                if exchange.status != 200:
                    raise RuntimeError(f"{variant}: answered {exchange.status}")

        per_client = max(1, requests // concurrency)
        for round_ in range(rounds + 1):
            started = time.process_time()
            await asyncio.gather(*(client(per_client) for _ in range(concurrency)))
            if round_:  # the first round warms up
                spent = time.process_time() - started
                figures.append(spent / (per_client * concurrency) * 1e6)
    return figures


def _worker(args: argparse.Namespace) -> None:
    import uvloop

    with tempfile.TemporaryDirectory(prefix="handler-cost-") as scratch:
        figures = uvloop.run(
            measure(
                args.worker, args.model, args.concurrency, args.requests, args.rounds, Path(scratch)
            )
        )
    print(json.dumps({"variant": args.worker, "us": figures}))


def _pair(
    args: argparse.Namespace, model: str, variant: str, baseline: Path | None = None
) -> tuple[list[float], list[float]]:
    """``gateway`` and ``variant``, both at once on ``--cpu``: their per-round figures.
    With ``baseline`` (a tree exported from another commit), the variant is that tree's
    gateway."""
    command = [sys.executable, "-m", "loadtests.handler_cost", "--model", model]
    command += ["--concurrency", str(args.concurrency), "--requests", str(args.requests)]
    command += ["--rounds", str(args.rounds), "--worker"]
    environments: list[dict[str, str]] = [dict(os.environ), dict(os.environ)]
    if baseline is not None:  # its gateway package imported ahead of the installed one
        environments[1] = {**os.environ, "PYTHONPATH": f"{baseline}{os.pathsep}{ROOT}"}
    runs = [
        subprocess.Popen(
            _pinned(args.cpu, [*command, name]), stdout=subprocess.PIPE, text=True, env=env
        )
        for name, env in zip(("gateway", variant), environments, strict=True)
    ]
    figures = []
    for run in runs:
        output, _ = run.communicate(timeout=600)
        if run.returncode != 0:
            raise SystemExit(f"the {variant} run failed (exit {run.returncode})")
        figures.append(json.loads(output.strip().splitlines()[-1])["us"])
    return figures[0], figures[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "wide"])
    parser.add_argument("--variants", nargs="*", default=VARIANTS[1:], choices=VARIANTS[1:])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=10_000, help="per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cpu", default="0", help="the core both processes of a pair share")
    parser.add_argument(
        "--baseline", metavar="GIT_REF", help="also pair the gateway with this commit's own"
    )
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="mlp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    print(f"{'model':6s} {'variant':18s} {'gateway us':>10s} {'variant us':>10s} {'saved us':>9s}")
    with tempfile.TemporaryDirectory(prefix="handler-cost-baseline-") as scratch:
        baseline = export_tree(args.baseline, Path(scratch) / "tree") if args.baseline else None
        for model in args.models:
            pairs: list[tuple[str, Path | None]] = [(v, None) for v in args.variants]
            if baseline is not None:
                pairs.append(("gateway", baseline))
            for variant, tree in pairs:
                gateway, other = _pair(args, model, variant, tree)
                saved = statistics.median(g - o for g, o in zip(gateway, other, strict=True))
                name = variant if tree is None else f"at {args.baseline}"
                print(
                    f"{model:6s} {name:18s} {statistics.median(gateway):10.1f} "
                    f"{statistics.median(other):10.1f} {saved:9.1f}",
                    flush=True,
                )
    print(
        "\nCPU us per request (event loop and inference thread), medians over "
        f"{args.rounds} rounds of {args.requests} requests at {args.concurrency} in flight; "
        "saved: the median of the per-round differences (gateway - variant), both "
        f"processes at once on core {args.cpu}"
    )


if __name__ == "__main__":
    main()
