"""REST JSON, REST binary, v1 and gRPC side by side, with the floor of each: one gateway
serving HTTP and gRPC, the same model and row driven through each transport in turn.

    make bench-protocols                 # or: .venv/bin/python -m loadtests.protocols [options]

The gateway is pinned to ``--server-cpu``; the load generators to ``--client-cpu``:
wrk for the REST bodies (v2 JSON; Triton's binary extension with binary outputs
asked for; v1 ``:predict`` with ``instances``), ``grpc_load.py`` (grpcio's asyncio
client, pre-serialized request, reply not parsed) for ModelInfer with
``raw_input_contents``. ``rest-floor`` is the v2 JSON load against ``floor_server.py``
(the floor of ``make bench``: a bare ASGI app on uvicorn that parses the body and
answers a fixed body). ``grpc-floor`` is the same gRPC load against ``grpc_floor.py``:
grpcio's server alone, answering a fixed reply of the model's output size, on the same
core: what gRPC costs before the gateway does anything. Each round drives every
transport once for ``--duration`` seconds, the order rotating from round to round, so
a noisy minute on a shared machine is spread over all.

Per model and connection count it prints, for each transport, the median req/s, its
median per-round ratio to REST JSON, p50 and p99, and CPU time per request of the
server and of the load generator (user + system). The server's CPU per request is the
figure that does not depend on how fast the client is: wrk is C, the gRPC client is
Python, and where the client's CPU per request approaches 1e6 / req/s it, not the
server, set the pace.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from loadtests.benchmark import (
    HERE,
    WRK_ERRORS,
    _bodies,
    _free_port,
    _pinned,
    _start_server,
    _stop,
    _wrk,
    infer_url,
    rotated,
)
from loadtests.compare import add_round_options
from loadtests.procstat import cpu_seconds
from loadtests.reference_models import SHAPES, input_width, write_repository

PROTOCOLS = ("rest-json", "rest-binary", "rest-v1", "rest-floor", "grpc", "grpc-floor")


@dataclass
class Requests:
    """One model's request, written once per transport."""

    json: Path
    binary: Path
    binary_header_length: int
    grpc: Path
    v1: Path


@dataclass
class Samples:
    rps: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    errors: int = 0


def write_requests(directory: Path, models: list[str]) -> dict[str, Requests]:
    """The same row as ``benchmark._bodies`` (same seed), as a v2 JSON body, a binary
    body, a serialized ModelInferRequest and a v1 body."""
    from gateway.rpc.messages import ModelInferRequest

    json_bodies = _bodies(directory, models)
    requests = {}
    for model in models:
        width = input_width(model)
        row = np.array(
            orjson.loads(json_bodies[model].read_bytes())["inputs"][0]["data"], dtype="<f4"
        )
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, width],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": row.nbytes},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        binary = directory / f"{model}.bin"
        binary.write_bytes(header + row.tobytes())
        message = ModelInferRequest(model_name=model)
        message.inputs.add(name="input", datatype="FP32", shape=[1, width])
        message.raw_input_contents.append(row.tobytes())
        grpc_request = directory / f"{model}.grpc"
        grpc_request.write_bytes(message.SerializeToString())
        v1 = directory / f"{model}.v1.json"
        v1.write_bytes(orjson.dumps({"instances": [row.tolist()]}))
        requests[model] = Requests(json_bodies[model], binary, len(header), grpc_request, v1)
    return requests


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _grpc_load(
    target: str, request: Path, connections: int, channels: int, duration: float, cpu: str
) -> dict[str, int]:
    command = [sys.executable, str(HERE / "grpc_load.py"), target, str(request)]
    command += ["--concurrency", str(connections), "--channels", str(min(channels, connections))]
    command += ["--duration", str(duration)]
    output = subprocess.run(
        _pinned(cpu, command), capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    line = next(x for x in output.splitlines() if x.startswith("GRPC_JSON "))
    return dict(json.loads(line.removeprefix("GRPC_JSON ")))


def start_floor(port: int, model: str, cpu: str) -> subprocess.Popen[bytes]:
    """grpc_floor.py for ``model``'s output size, once it answers."""
    output_bytes = SHAPES[model][1][-1] * 4
    command = [sys.executable, str(HERE / "grpc_floor.py"), str(port), str(output_bytes)]
    process = subprocess.Popen(_pinned(cpu, command))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("grpc_floor.py did not start")


# a transport's load: (connections, seconds) -> a wrk-like summary; and the server's pid
Driver = tuple[Callable[[int, float], dict[str, int]], int]


def drivers(
    args: argparse.Namespace,
    servers: tuple[subprocess.Popen[bytes], int, int],
    floors: tuple[tuple[subprocess.Popen[bytes], int], tuple[subprocess.Popen[bytes], int]],
    model: str,
    request: Requests,
) -> dict[str, Driver]:
    """``floors``: the HTTP floor (floor_server.py) and this model's gRPC floor."""
    gateway, port, grpc_port = servers
    (http_floor, http_floor_port), floor = floors
    url = infer_url(port, model)
    v1_url = f"http://127.0.0.1:{port}/v1/models/{model}:predict"
    floor_url = infer_url(http_floor_port, model)
    binary = ["--binary", str(request.binary), str(request.binary_header_length)]

    def grpc_at(target: str) -> Callable[[int, float], dict[str, int]]:
        return lambda c, s: _grpc_load(
            target, request.grpc, c, args.grpc_channels, s, args.client_cpu
        )

    return {
        "rest-json": (lambda c, s: _wrk(url, request.json, c, s, args.client_cpu), gateway.pid),
        "rest-binary": (lambda c, s: _wrk(url, binary, c, s, args.client_cpu), gateway.pid),
        "rest-v1": (lambda c, s: _wrk(v1_url, request.v1, c, s, args.client_cpu), gateway.pid),
        "rest-floor": (
            lambda c, s: _wrk(floor_url, request.json, c, s, args.client_cpu),
            http_floor.pid,
        ),
        "grpc": (grpc_at(f"127.0.0.1:{grpc_port}"), gateway.pid),
        "grpc-floor": (grpc_at(f"127.0.0.1:{floor[1]}"), floor[0].pid),
    }


def measure(
    args: argparse.Namespace, run: dict[str, Driver], connections: int
) -> dict[str, Samples]:
    samples = {protocol: Samples() for protocol in PROTOCOLS}
    for protocol in PROTOCOLS:  # warm-up, discarded
        run[protocol][0](8, 1)
    for index in range(args.rounds):
        this_round = {}
        for protocol in rotated(PROTOCOLS, index):
            load, pid = run[protocol]
            server_before, client_before = cpu_seconds(pid), _children_cpu()
            result = load(connections, args.duration)
            requests = max(result["requests"], 1)
            mine = samples[protocol]
            this_round[protocol] = requests / (result["duration_us"] / 1e6)
            mine.rps.append(this_round[protocol])
            mine.p50.append(result["p50"] / 1000)
            mine.p99.append(result["p99"] / 1000)
            mine.server_cpu.append((cpu_seconds(pid) - server_before) / requests * 1e6)
            mine.client_cpu.append((_children_cpu() - client_before) / requests * 1e6)
            mine.errors += result.get("errors", 0) or sum(result.get(k, 0) for k in WRK_ERRORS)
        for protocol in PROTOCOLS:
            samples[protocol].ratio.append(this_round[protocol] / this_round["rest-json"])
    return samples


def print_rows(model: str, connections: int, samples: dict[str, Samples]) -> None:
    median = statistics.median
    for protocol in PROTOCOLS:
        mine = samples[protocol]
        spread = f"{min(mine.ratio):.2f}-{max(mine.ratio):.2f}"
        print(
            f"{model:<5} {connections:>3}c {protocol:<12} {median(mine.rps):>9,.0f} "
            f"{median(mine.ratio):>6.3f} {spread:>10} {median(mine.p50):>7.2f} "
            f"{median(mine.p99):>7.2f} {median(mine.server_cpu):>10.0f} "
            f"{median(mine.client_cpu):>10.0f} {mine.errors:>6}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_round_options(parser, ["mlp", "wide"], [1, 64])
    parser.add_argument(
        "--grpc-channels",
        type=int,
        default=1,
        help="HTTP/2 connections the gRPC client spreads its requests over (1: as one "
        "tritonclient.grpc client does)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-protocols-") as scratch:
        base = Path(scratch)
        repository = write_repository(base / "models", 32, 2.0)
        requests = write_requests(base, args.models)
        port, grpc_port = _free_port(), _free_port()
        server = _start_server(
            "gateway", repository, port, args.server_cpu, ["--grpc-port", str(grpc_port)]
        )
        floors: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        http_floor_port = _free_port()
        http_floor = _start_server("floor", repository, http_floor_port, args.server_cpu)
        try:
            for model in args.models:
                floor_port = _free_port()
                floors[model] = (start_floor(floor_port, model, args.server_cpu), floor_port)
            print(
                f"one gateway (cpu {args.server_cpu}), HTTP :{port} and gRPC :{grpc_port}; "
                f"load on cpu {args.client_cpu}; {args.rounds} rounds of {args.duration:g} s; "
                f"gRPC over {args.grpc_channels} channel(s)"
            )
            print(
                f"{'model':<5} {'conn':>4} {'transport':<12} {'req/s':>9} {'ratio':>6} "
                f"{'rounds':>10} {'p50 ms':>7} {'p99 ms':>7} {'server':>10} {'client':>10} "
                f"{'errors':>6}"
            )
            print(f"{'':<43}(to REST JSON){'':<16}(CPU us a request)")
            for model in args.models:
                run = drivers(
                    args,
                    (server, port, grpc_port),
                    ((http_floor, http_floor_port), floors[model]),
                    model,
                    requests[model],
                )
                for connections in args.connections:
                    print_rows(model, connections, measure(args, run, connections))
        finally:
            _stop(server)
            _stop(http_floor)
            for floor, _ in floors.values():
                _stop(floor)


if __name__ == "__main__":
    main()
