"""Benchmark: the fraud model called with entity ids (features from Redis) against the same
model called with the feature vector inline, side by side in one run.

    make bench-features              # or: .venv/bin/python -m loadtests.features_benchmark

A redis-server of its own (free port) is loaded with the example users
(models/fraud/entities.csv, via ``gateway features load``); one gateway serves
four copies of the fraud model that differ only in [features]:

- ``inline``: the caller sends ``features`` (FP32 [1, 6]); no lookup at all;
- ``redis``: ids, ``local_ttl_ms = 0``: every row is fetched from Redis (batched);
- ``cached``: ids, a long ``local_ttl_ms``, warmed up: every row is a local cache hit;
- ``default``: ids, the shipped config (``local_ttl_ms = 1000``).

wrk drives each at ``--connections`` (64) with a random user per request, for
``--rounds`` rounds in turn (so drift on a shared machine hits all alike). Per
scenario: req/s, p50/p99, req/s relative to inline (overall, per round, and the
median of the rounds), and Redis HMGETs and round trips (reads the server
processed) per request, from INFO.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from loadtests.benchmark import ROOT, _free_port, _start_server, _stop, _wrk

ENTITIES = ROOT / "models" / "fraud" / "entities.csv"
USERS = 1000
SCENARIOS = {
    "inline": None,
    "redis": "local_ttl_ms = 0",
    "cached": "local_ttl_ms = 3600000",
    "default": "local_ttl_ms = 1000",
}
INLINE_BODY = (
    b'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,6],'
    b'"data":[38,1328,4150.76,5,81.63,0]}]}'
)


@dataclass
class Result:
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    hmget_per_request: list[float] = field(default_factory=list)
    trips_per_request: list[float] = field(default_factory=list)
    errors: int = 0


def write_repository(root: Path) -> Path:
    source = ROOT / "models" / "fraud"
    toml = (source / "model.toml").read_text()
    for name, ttl in SCENARIOS.items():
        shutil.copytree(source / "1", root / f"fraud_{name}" / "1")
        text = toml if ttl is None else toml.replace("local_ttl_ms = 1000", ttl)
        if ttl is not None:
            assert ttl in text, "model.toml no longer sets local_ttl_ms = 1000"
        (root / f"fraud_{name}" / "model.toml").write_text(text)
    return root


def start_redis(directory: Path, port: int, cpu: str) -> subprocess.Popen[bytes]:
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(directory)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", cpu, *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def run(args: argparse.Namespace) -> dict[str, Result]:
    results = {name: Result() for name in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="features-bench-") as scratch:
        base = Path(scratch)
        repository = write_repository(base / "repo")
        redis_port, port = _free_port(), _free_port()
        redis_process = start_redis(base, redis_port, args.client_cpu)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        stats = redis.Redis(port=redis_port, decode_responses=True)
        gateway = None
        try:
            subprocess.run(
                [sys.executable, "-m", "gateway", "features", "load", str(ENTITIES)]
                + ["--redis-url", redis_url, "--key", "user:{user_id}"],
                check=True,
                capture_output=True,
            )
            gateway = _start_server(
                "gateway", repository, port, args.server_cpu, ["--redis-url", redis_url]
            )
            inline_body = base / "inline.json"
            inline_body.write_bytes(INLINE_BODY)
            for name in SCENARIOS:  # warm-up: connections, and the cached scenario's cache
                url = f"http://127.0.0.1:{port}/v2/models/fraud_{name}/infer"
                body = inline_body if name == "inline" else ["--entities", str(USERS)]
                _wrk(url, body, 8, 1, args.client_cpu)
            for number in range(1, USERS + 1):
                user = {"name": "user_id", "datatype": "BYTES", "shape": [1]}
                httpx.post(
                    f"http://127.0.0.1:{port}/v2/models/fraud_cached/infer",
                    json={"inputs": [{**user, "data": [f"u{number:04d}"]}]},
                ).raise_for_status()
            for round_number in range(args.rounds):
                for name in SCENARIOS:
                    print(f"round {round_number + 1}: {name} ...", flush=True)
                    url = f"http://127.0.0.1:{port}/v2/models/fraud_{name}/infer"
                    body = inline_body if name == "inline" else ["--entities", str(USERS)]
                    stats.config_resetstat()
                    summary = _wrk(url, body, args.connections, args.duration, args.client_cpu)
                    reads = int(stats.info("stats")["total_reads_processed"]) - 1
                    hmget = int(stats.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))
                    requests = max(summary["requests"], 1)
                    result = results[name]
                    result.rps.append(summary["requests"] / (summary["duration_us"] / 1e6))
                    result.p50_ms.append(summary["p50"] / 1000)
                    result.p99_ms.append(summary["p99"] / 1000)
                    result.hmget_per_request.append(hmget / requests)
                    result.trips_per_request.append(reads / requests)
                    result.errors += sum(
                        summary[k]
                        for k in ("connect_errors", "read_errors", "write_errors", "status_errors")
                    )
        finally:
            if gateway is not None:
                _stop(gateway)
            redis_process.terminate()
            redis_process.wait(timeout=10)
    return results


def print_table(results: dict[str, Result], connections: int) -> None:
    inline = statistics.mean(results["inline"].rps)
    print(
        f"\n{'scenario':<9} {'req/s':>8} {'vs inline':>9} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'HMGET/req':>9} {'trips/req':>9} {'errors':>6}   ({connections} connections)"
    )
    for name, result in results.items():
        rps = statistics.mean(result.rps)
        print(
            f"{name:<9} {rps:>8.0f} {rps / inline:>9.1%} "
            f"{statistics.mean(result.p50_ms):>7.2f} {statistics.mean(result.p99_ms):>7.2f} "
            f"{statistics.mean(result.hmget_per_request):>9.3f} "
            f"{statistics.mean(result.trips_per_request):>9.3f} {result.errors:>6}"
        )
    print("\nper round, req/s relative to inline in the same round (and their median):")
    for name, result in results.items():
        ratios = [r / i for r, i in zip(result.rps, results["inline"].rps, strict=True)]
        cells = "  ".join(f"{ratio:.1%}" for ratio in ratios)
        print(f"  {name:<9} {cells}   median {statistics.median(ratios):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per scenario")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1", help="wrk and redis-server")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (make bench-features installs it)")
    print_table(run(args), args.connections)


if __name__ == "__main__":
    main()
