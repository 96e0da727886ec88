"""Compare two builds of the gateway on the same models and load, in alternating rounds.

    make bench-compare                                  # working tree against origin/main
    .venv/bin/python -m loadtests.compare --baseline f490362 --rounds 7 --duration 3

On a shared machine one long run per server measures the neighbours as much as the
server: a minute of contention lands on whichever server runs then. Here both
servers stay up side by side (pinned to the same core, only the one under load is
busy), and each round drives one then the other with ``wrk`` for ``--duration``
seconds, swapping the order every round. Per model and connection count it prints
the median req/s and p99 of each, the median of the per-round req/s ratios with
every round's ratio (their spread is the noise), and the server CPU time per
request (user + system, all threads, from /proc) as a second opinion.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from loadtests.benchmark import (
    ROOT,
    _bodies,
    _free_port,
    _start_server,
    _stop,
    _wrk,
    export_tree,
    infer_url,
    rotated,
)
from loadtests.procstat import cpu_seconds
from loadtests.reference_models import write_repository


def add_round_options(
    parser: argparse.ArgumentParser, models: list[str], connections: list[int]
) -> None:
    """The options every side-by-side run takes (this one, drift_cost, payload_cost)."""
    parser.add_argument("--models", nargs="+", default=models)
    parser.add_argument("--connections", nargs="+", type=int, default=connections)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")


# an arm: the repository it serves, its extra `gateway serve` flags, the source tree
Arm = tuple[Path, list[str], Path]


def side_by_side(
    args: argparse.Namespace, arms: dict[str, Arm], bodies: dict[str, Path], banner: str
) -> None:
    """Start the "candidate" and "baseline" gateways, print ``banner``, compare them on
    every model and connection count, and stop them."""
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name, (repository, extra, source) in arms.items():
            port = _free_port()
            process = _start_server(
                "gateway", repository, port, args.server_cpu, extra, source=source
            )
            servers[name] = (process, port)
        print(banner, flush=True)
        for model in args.models:
            for connections in args.connections:
                compare(args, servers, model, connections, bodies[model])
    finally:
        for process, _ in servers.values():
            _stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="origin/main", metavar="GIT_REF")
    parser.add_argument(
        "--candidate",
        default=None,
        metavar="GIT_REF",
        help="a commit to compare instead of the working tree",
    )
    add_round_options(parser, ["mlp", "wide"], [1, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-compare-") as scratch:
        base = Path(scratch)
        repository = write_repository(base / "models", 32, 2.0)
        bodies = _bodies(base, args.models)
        candidate = export_tree(args.candidate, base / "candidate") if args.candidate else ROOT
        arms: dict[str, Arm] = {
            "candidate": (repository, [], candidate),
            "baseline": (repository, [], export_tree(args.baseline, base / "baseline")),
        }
        banner = f"candidate: {args.candidate or 'working tree'}, baseline: {args.baseline}"
        side_by_side(args, arms, bodies, banner)


def compare(
    args: argparse.Namespace,
    servers: dict[str, tuple[subprocess.Popen[bytes], int]],
    model: str,
    connections: int,
    body: Path,
) -> None:
    rps: dict[str, list[float]] = {name: [] for name in servers}
    p99: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    ratios = []
    for _, port in servers.values():  # warm-up, discarded
        _wrk(infer_url(port, model), body, 8, 1, args.client_cpu)
    for index in range(args.rounds):
        this_round = {}
        for name, (process, port) in rotated(list(servers.items()), index):
            pid = process.pid
            before = cpu_seconds(pid)
            result = _wrk(infer_url(port, model), body, connections, args.duration, args.client_cpu)
            requests = max(result["requests"], 1)
            this_round[name] = requests / (result["duration_us"] / 1e6)
            rps[name].append(this_round[name])
            p99[name].append(result["p99"] / 1000)
            cpu[name].append((cpu_seconds(pid) - before) / requests * 1e6)
        ratios.append(this_round["candidate"] / this_round["baseline"])
    median = statistics.median
    print(
        f"{model} {connections}c: candidate {median(rps['candidate']):,.0f} req/s "
        f"(p99 {median(p99['candidate']):.2f} ms, {median(cpu['candidate']):.0f} CPU us/req), "
        f"baseline {median(rps['baseline']):,.0f} req/s "
        f"(p99 {median(p99['baseline']):.2f} ms, {median(cpu['baseline']):.0f} CPU us/req); "
        f"ratio {median(ratios):.3f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)})",
        flush=True,
    )


if __name__ == "__main__":
    main()
