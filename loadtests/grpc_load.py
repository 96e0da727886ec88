"""A closed-loop gRPC load generator for ModelInfer: wrk's job, for the gRPC transport.

    python loadtests/grpc_load.py 127.0.0.1:8001 request.bin --concurrency 64 --duration 8

``request.bin`` is one serialized ``inference.ModelInferRequest``; it is sent as bytes
as it is (no protobuf work on the client per request), and the reply is not parsed
either, so the client spends its time on gRPC itself. ``--concurrency`` requests are in
flight at any time, spread over ``--channels`` HTTP/2 connections (1 by default, as
one ``tritonclient.grpc`` client uses). Prints one line, ``GRPC_JSON {...}``, with the
same fields as wrk_post.lua's summary (latencies in microseconds), plus the client's
own CPU seconds, so a run that saturated the client can be told apart.

Every call has a 10 s deadline (wrk's --timeout); a call that fails is counted by its
status code and not retried. The loop ends at ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"
DEADLINE_S = 10.0


async def _drive(
    call: grpc.aio.UnaryUnaryMultiCallable,
    body: bytes,
    deadline: float,
    latencies: list[int],
    failures: Counter[str],
) -> None:
    clock = time.perf_counter_ns
    while time.monotonic() < deadline:
        start = clock()
        try:
            await call(body, timeout=DEADLINE_S)
        except grpc.aio.AioRpcError as exc:
            failures[exc.code().name] += 1
            continue
        latencies.append((clock() - start) // 1000)


async def run(
    target: str, body: bytes, concurrency: int, channels: int, duration: float
) -> dict[str, object]:
    opened = [
        # a subchannel pool of its own each, or the channels would share one connection
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        calls = [
            channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            for channel in opened
        ]
        for call in calls:  # connect, and warm the server's path, before the clock starts
            try:
                await call(body, timeout=DEADLINE_S)
            except grpc.aio.AioRpcError as exc:
                raise SystemExit(
                    f"the gateway refused the request: {exc.code().name}: {exc.details()}"
                ) from None
        latencies: list[int] = []
        failures: Counter[str] = Counter()
        cpu_before = time.process_time()
        started = time.perf_counter()
        deadline = time.monotonic() + duration
        await asyncio.gather(
            *(
                _drive(calls[index % channels], body, deadline, latencies, failures)
                for index in range(concurrency)
            )
        )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
    finally:
        for channel in opened:
            await channel.close()
    done = np.array(latencies or [0], dtype=np.int64)
    p50, p90, p99, p999 = np.percentile(done, [50, 90, 99, 99.9])
    return {
        "requests": len(latencies) + sum(failures.values()),
        "duration_us": int(elapsed * 1e6),
        "errors": sum(failures.values()),
        "error_codes": dict(failures),
        "p50": int(p50),
        "p90": int(p90),
        "p99": int(p99),
        "p999": int(p999),
        "max": int(done.max()),
        "client_cpu_s": round(cpu, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gateway's gRPC server")
    parser.add_argument("request", type=Path, help="a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds")
    args = parser.parse_args()
    if not 1 <= args.channels <= args.concurrency <= 4096:
        parser.error("need 1 <= --channels <= --concurrency <= 4096")
    if not 0 < args.duration <= 3600:
        parser.error("--duration must be between 0 and 3600 seconds")
    summary = asyncio.run(
        run(args.target, args.request.read_bytes(), args.concurrency, args.channels, args.duration)
    )
    print("GRPC_JSON " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
