"""Benchmark: the gateway (batching on and off) against a naive server, the floor of its
HTTP stack and raw onnxruntime.

    make bench                       # or: .venv/bin/python -m loadtests.benchmark [options]

Each server runs pinned to one CPU core (``taskset``), the load generator on another.
For each server and model (``mlp``, ``wide``; see reference_models.py) it measures:

- closed loop with wrk at 1, 8 and 64 connections: req/s and latency percentiles;
- open loop at constant arrival rates (open_loop.py): latency from each request's
  scheduled send time, so queueing shows up instead of being hidden;

and, once, the in-process onnxruntime ceiling in rows/s at batch 1, 8 and 32 on one
core. Prints one table, writes ``results.csv`` and ``latency.png`` to ``--out``.

All servers run from the start, and each closed-loop level is measured for every
server in turn (``--rounds`` rounds in rotating order, the median kept), so that
their shares of each other are taken in the same minute on a machine whose speed
drifts. Closed-loop rows also carry the server's CPU time per request (from /proc) and, for
the gateway, its mean batch size over the level (``gateway_batch_size``). With the
``floor`` server (floor_server.py: reads and parses the body, answers a fixed body)
and the ceiling, a second table gives the gateway's share of the floor and of the
one-core limit (limits.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import orjson

from loadtests.limits import limits, print_limits
from loadtests.procstat import batch_totals, cpu_seconds
from loadtests.reference_models import input_width, write_repository

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERVERS = {
    "gateway": "gateway, batching on",
    "gateway-nobatch": "gateway, batching off",
    "naive": "naive Starlette server",
    "floor": "bare ASGI floor (no inference)",
}
BASELINE = "baseline"  # the gateway of --baseline REF, batching on
DEFAULT_RATES = {"mlp": [2000, 5000, 10000], "wide": [1000, 2500, 3500]}
BATCH_SIZES = (1, 2, 4, 8, 16, 32)  # the in-process ceiling's, for limits.row_cost_us


T = TypeVar("T")


@dataclass
class Row:
    server: str
    model: str
    mode: str  # closed, open, in-process
    level: str  # connections, target req/s, or batch size
    rps: float
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    p999_ms: float = float("nan")
    errors: int = 0
    cpu_us: float = float("nan")  # server CPU time per request (closed loop)
    batch: float = float("nan")  # the gateway's mean batch size over the level


def infer_url(port: int, model: str) -> str:
    """The v2 inference URL of ``model`` on a server of this machine."""
    return f"http://127.0.0.1:{port}/v2/models/{model}/infer"


def rotated(items: Sequence[T], index: int) -> list[T]:
    """``items`` in the order of round ``index``: each round starts one further along,
    so that no server or transport always runs first (or right after another)."""
    turn = index % len(items)
    return [*items[turn:], *items[:turn]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") else command


def _start_server(
    kind: str,
    repository: Path,
    port: int,
    cpu: str,
    extra: Sequence[str] = (),
    source: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """``source``: the tree whose ``gateway`` package is served (another commit's, for
    --baseline), imported ahead of the installed one."""
    python = sys.executable
    if kind == "naive":
        command = [python, "-m", "loadtests.naive_server", str(repository), "--port", str(port)]
    elif kind == "floor":
        command = [python, "-m", "loadtests.floor_server", "--port", str(port)]
    else:
        command = [
            python,
            "-m",
            "gateway",
            "serve",
            "--model-repository",
            str(repository),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
        ]
    env = {**os.environ, "PYTHONPATH": str(source)}
    process = subprocess.Popen(_pinned(cpu, command), cwd=source, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{kind} did not become ready")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _wrk(
    url: str, body: Path | Sequence[str], connections: int, duration: float, cpu: str
) -> dict[str, int]:
    """wrk's summary; ``body`` is a file to POST, or arguments for wrk_post.lua."""
    command = _pinned(
        cpu,
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "wrk_post.lua"),
            url,
            "--",
            *([str(body)] if isinstance(body, Path) else body),
        ],
    )
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(x for x in output.splitlines() if x.startswith("WRK_JSON "))
    return dict(json.loads(line.removeprefix("WRK_JSON ")))


def _open_loop(url: str, body: Path, rate: float, duration: float, cpu: str) -> dict[str, float]:
    command = _pinned(
        cpu,
        [
            sys.executable,
            str(HERE / "open_loop.py"),
            url,
            str(body),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
        ],
    )
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def measure_ceiling(repository: Path, models: list[str], cpu: str, seconds: float) -> list[Row]:
    """rows/s of session.run in-process, one thread, pinned like the servers."""
    script = f"""
import json, time, numpy as np, onnxruntime as ort
out = {{}}
for name, width in {[(m, input_width(m)) for m in models]!r}:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession("{repository}/" + name + "/1/model.onnx", options,
                                   providers=["CPUExecutionProvider"])
    for batch in {BATCH_SIZES!r}:
        x = np.random.default_rng(0).standard_normal((batch, width)).astype(np.float32)
        for _ in range(20):
            session.run(None, {{"input": x}})
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < {seconds}:
            session.run(None, {{"input": x}})
            runs += 1
        out[name + ":" + str(batch)] = runs * batch / (time.perf_counter() - start)
print(json.dumps(out))
"""
    output = subprocess.run(
        _pinned(cpu, [sys.executable, "-c", script]), capture_output=True, text=True, check=True
    ).stdout
    measured = json.loads(output.strip().splitlines()[-1])
    return [
        Row("onnxruntime", key.split(":")[0], "in-process", f"batch {key.split(':')[1]}", v)
        for key, v in measured.items()
    ]


def _bodies(directory: Path, models: list[str]) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    paths = {}
    for model in models:
        width = input_width(model)
        data = rng.standard_normal(width).astype(np.float32).tolist()
        body = {
            "inputs": [{"name": "input", "shape": [1, width], "datatype": "FP32", "data": data}]
        }
        paths[model] = directory / f"{model}.json"
        paths[model].write_bytes(orjson.dumps(body))
    return paths


def export_tree(ref: str, destination: Path) -> Path:
    """The files of commit ``ref`` of this repository, for serving its gateway side by side
    with the working tree's."""
    destination.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "gateway"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    return destination


WRK_ERRORS = ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")


def closed_level(
    args: argparse.Namespace,
    server: str,
    pid: int,
    port: int,
    model: str,
    body: Path,
    connections: int,
) -> Row:
    """wrk at ``connections`` for ``--duration`` s, with the server's CPU time per request
    and, for a gateway, its mean batch size over the run."""
    base = f"http://127.0.0.1:{port}"
    cpu_before, rows_before = cpu_seconds(pid), batch_totals(base, model)
    result = _wrk(infer_url(port, model), body, connections, args.duration, args.client_cpu)
    requests = max(result["requests"], 1)
    cpu_us = (cpu_seconds(pid) - cpu_before) / requests * 1e6
    rows_after = batch_totals(base, model)
    batches = rows_after[1] - rows_before[1]
    return Row(
        server,
        model,
        "closed",
        f"{connections}c",
        result["requests"] / (result["duration_us"] / 1e6),
        result["p50"] / 1000,
        result["p90"] / 1000,
        result["p99"] / 1000,
        result["p999"] / 1000,
        sum(result[k] for k in WRK_ERRORS),
        cpu_us,
        (rows_after[0] - rows_before[0]) / batches if batches else float("nan"),
    )


def median_row(runs: Sequence[Row]) -> Row:
    """One closed-loop level from its rounds: the median of each figure, errors summed
    (a figure that is not measured for this server stays NaN)."""

    def median(name: str) -> float:
        values = [getattr(run, name) for run in runs]
        return float("nan") if any(v != v for v in values) else statistics.median(values)

    first = runs[0]
    return Row(
        first.server,
        first.model,
        first.mode,
        first.level,
        median("rps"),
        median("p50_ms"),
        median("p90_ms"),
        median("p99_ms"),
        median("p999_ms"),
        sum(run.errors for run in runs),
        median("cpu_us"),
        median("batch"),
    )


# the servers being measured: name -> (process, port)
Running = dict[str, tuple[subprocess.Popen[bytes], int]]


def run_benchmark(args: argparse.Namespace) -> list[Row]:
    """Every server runs from the start (idle ones cost next to nothing on the shared
    core), so that each closed-loop level is measured for all of them in the same
    minute, in ``--rounds`` rounds whose order rotates: on a shared machine whose speed
    drifts, their shares of each other hold better than a run of one server after
    another. The open-loop levels then run server by server."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as scratch:
        base = Path(scratch)
        repositories = {
            "gateway": write_repository(base / "batch", args.max_batch_size, args.max_delay_ms),
            "gateway-nobatch": write_repository(base / "nobatch", 0),
        }
        repositories["naive"] = repositories["floor"] = repositories["gateway-nobatch"]
        repositories[BASELINE] = repositories["gateway"]
        sources = {server: ROOT for server in repositories}
        servers = list(args.servers)
        if args.baseline:
            sources[BASELINE] = export_tree(args.baseline, base / "baseline-source")
            where = servers.index("gateway") + 1 if "gateway" in servers else 0
            servers.insert(where, BASELINE)
        bodies = _bodies(base, args.models)
        print(f"onnxruntime ceiling (cpu {args.server_cpu}) ...", flush=True)
        rows += measure_ceiling(repositories["gateway"], args.models, args.server_cpu, 1.0)
        running: Running = {}
        try:
            for server in servers:
                port = _free_port()
                source = sources[server]
                process = _start_server(
                    server, repositories[server], port, args.server_cpu, source=source
                )
                running[server] = (process, port)
            closed = {
                model: _closed_levels(args, running, model, bodies[model]) for model in args.models
            }
            for server in servers:
                for model in args.models:
                    rows += closed[model][server] + _open_levels(
                        args, running, server, model, bodies[model]
                    )
        finally:
            for process, _ in running.values():
                _stop(process)
    return rows


def _closed_levels(
    args: argparse.Namespace, running: Running, model: str, body: Path
) -> dict[str, list[Row]]:
    """Each server's closed-loop rows for ``model``, every level run for all servers in
    turn, ``--rounds`` times in rotating order."""
    servers = list(running)
    for server in servers:  # warm-up, discarded
        _wrk(infer_url(running[server][1], model), body, 8, 2, args.client_cpu)
    levels: dict[str, list[Row]] = {server: [] for server in servers}
    for connections in args.connections:
        runs: dict[str, list[Row]] = {server: [] for server in servers}
        for index in range(args.rounds):
            for server in rotated(servers, index):
                print(f"{server} {model} closed {connections}c ...", flush=True)
                process, port = running[server]
                runs[server].append(
                    closed_level(args, server, process.pid, port, model, body, connections)
                )
        for server in servers:
            levels[server].append(median_row(runs[server]))
    return levels


def _open_levels(
    args: argparse.Namespace, running: Running, server: str, model: str, body: Path
) -> list[Row]:
    url = infer_url(running[server][1], model)
    rows = []
    for rate in args.rates.get(model, DEFAULT_RATES[model]):
        print(f"{server} {model} open {rate}/s ...", flush=True)
        summary = _open_loop(url, body, rate, args.duration, args.client_cpu)
        rows.append(
            Row(
                server,
                model,
                "open",
                f"{rate}/s",
                summary["rps"],
                summary["p50_ms"],
                summary["p90_ms"],
                summary["p99_ms"],
                summary["p999_ms"],
                int(summary["errors"]),
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'server':<16} {'model':<5} {'mode':<10} {'level':<9} {'req/s':>9} "
        f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'errors':>6} "
        f"{'CPU us':>7} {'batch':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        rate = f"{r.rps:9.0f}" + ("*" if r.mode == "in-process" else " ")
        print(
            f"{r.server:<16} {r.model:<5} {r.mode:<10} {r.level:<9} {rate[:-1]:>9}"
            f"{rate[-1]}{r.p50_ms:7.2f} {r.p90_ms:8.2f} {r.p99_ms:8.2f} {r.p999_ms:9.2f} "
            f"{r.errors:6d} {r.cpu_us:7.0f} {r.batch:6.1f}"
        )
    print("* in-process rows are onnxruntime rows/s (no HTTP), the ceiling for one core")
    print("CPU us: the server's CPU time per request; batch: the gateway's mean batch size")


def write_csv(rows: list[Row], path: Path) -> None:
    names = [f.name for f in fields(Row)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for r in rows:
            values = [getattr(r, name) for name in names]
            writer.writerow([f"{v:.3f}" if isinstance(v, float) else v for v in values])


def plot(rows: list[Row], path: Path, models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(models), figsize=(6 * len(models), 9), squeeze=False)
    for column, model in enumerate(models):
        closed, opened = axes[0][column], axes[1][column]
        labels = {**SERVERS, BASELINE: "gateway at the baseline commit"}
        servers = [s for s in labels if any(r.server == s and r.model == model for r in rows)]
        for offset, server in enumerate(servers):
            mine = [r for r in rows if r.server == server and r.model == model]
            levels = [r for r in mine if r.mode == "closed"]
            step = 0.8 / len(servers)
            positions = np.arange(len(levels)) + offset * step
            closed.bar(positions, [r.rps for r in levels], width=step * 0.9, label=labels[server])
            closed.set_xticks(
                np.arange(len(levels)) + step * (len(servers) - 1) / 2, [r.level for r in levels]
            )
            loads = [r for r in mine if r.mode == "open"]
            offered = [float(r.level.removesuffix("/s")) for r in loads]
            opened.plot(
                offered, [r.p99_ms for r in loads], marker="o", label=f"{labels[server]} p99"
            )
            opened.plot(
                offered,
                [r.p50_ms for r in loads],
                marker=".",
                linestyle="--",
                label=f"{labels[server]} p50",
            )
        title = f"{model}: closed loop (wrk), req/s by connections"
        tallest = max((r.rps for r in rows if r.model == model and r.mode == "closed"), default=0.0)
        for r in rows:
            if r.server == "onnxruntime" and r.model == model and r.level == "batch 32":
                if r.rps <= 3 * tallest:
                    closed.axhline(
                        r.rps, color="grey", linestyle=":", label="onnxruntime rows/s, batch 32"
                    )
                else:  # far above the bars: say it rather than squash them
                    title += f"\n(onnxruntime alone: {r.rps:,.0f} rows/s at batch 32)"
        closed.set_title(title)
        closed.legend(fontsize=8)
        opened.set_title(f"{model}: open loop, latency by offered req/s")
        opened.set_yscale("log")
        opened.set_ylabel("ms")
        opened.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "wide"])
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    parser.add_argument("--connections", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="MODEL=R1,R2",
        help="open-loop arrival rates for a model, e.g. wide=500,1500",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per level")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="closed-loop runs of every server per level, in rotating order (the median)",
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=2.0)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results")
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run the gateway of this commit (e.g. origin/main, HEAD~3), right after "
        "the working tree's, with the same models and load: a side-by-side comparison",
    )
    args = parser.parse_args()
    args.rates = {
        m: [int(x) for x in r.split(",")] for m, r in (item.split("=", 1) for item in args.rate)
    }
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk (make bench does it)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_benchmark(args)
    print()
    print_table(rows)
    print_limits(limits(rows, ["gateway", BASELINE]))
    write_csv(rows, args.out / "results.csv")
    plot(rows, args.out / "latency.png", args.models)
    print(f"\nwrote {args.out / 'results.csv'} and {args.out / 'latency.png'}")
    print(
        f"machine: {os.cpu_count()} CPUs; server on cpu {args.server_cpu}, "
        f"load on cpu {args.client_cpu}"
    )


if __name__ == "__main__":
    main()
