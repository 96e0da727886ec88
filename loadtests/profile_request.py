"""Where a request's microseconds go: the gateway under wrk, sampled with py-spy.

    make bench-profile        # or: .venv/bin/python -m loadtests.profile_request [options]

One gateway serves the reference models (batching 32 / 2 ms, one onnxruntime thread,
as in benchmark.py), pinned to ``--server-cpu``; wrk and py-spy run on
``--client-cpu``. For each model and connection count, wrk drives the gateway for
``--duration`` seconds while py-spy samples every thread of it that is on the CPU
(``--nonblocking``: the gateway is never paused). Each sample is put in the step of the
request path its innermost gateway, onnxruntime, numpy or server frame belongs to
(``STEPS``); a step's share of the samples times the server's CPU time per request
(from /proc) is its microseconds per request.

It also prints, from the gateway's own metrics over the same seconds: the mean batch
size and the batch-size distribution, the mean queue wait per request and the mean
run time per batch (wall-clock, not CPU).
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.repository import threads
from loadtests.benchmark import _bodies, _free_port, _pinned, _start_server, _stop
from loadtests.procstat import cpu_seconds, metric_totals
from loadtests.reference_models import write_repository

# (step, what a frame "function (file:line)" contains): the first rule that matches the
# innermost frame that matches any rule names the step
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("run", ("onnxruntime", "repository/session.py")),
    ("concatenate", ("batching/assemble.py",)),
    ("split", ("hand_back (",)),
    ("parse JSON", ("protocol/jsonbody.py",)),
    ("encode", ("encode_response (", "json_data (", "to_bytes (", "http/responses.py")),
    ("to numpy", ("protocol/tensors.py", "protocol/v2.py", "protocol/v1.py", "signature.py")),
    ("routing", ("gateway/routing/", "admit (", "_by_input (", "repository/served.py")),
    (
        "bookkeeping",
        ("gateway/metrics.py", "gateway/tallies.py", "request_log.py", "gateway/logs.py")
        + ("prometheus_client", "finish (", "gateway/payload/", "gateway/monitoring/", "logging/"),
    ),
    ("queue and hand-off", ("gateway/batching/", "repository/threads.py", "repository/version.py")),
    (
        "HTTP server",
        ("uvicorn/", "httptools", "http/connection.py", "http/body.py", "http/exchange.py"),
    ),
    ("request path glue", ("gateway/",)),
]
OTHER = "event loop and I/O (C)"
IDLE = "idle"
# frames that start every sample of a thread: they say nothing about the step
BOOTSTRAP: tuple[str, ...] = (
    "gateway/cli/",
    "gateway/server.py",
    "uvicorn/server.py",
    "uvicorn/main.py",
)
BOOTSTRAP += ("uvicorn/_compat.py", "asyncio/runners.py", "threading.py", "gateway/__main__.py")
BOOTSTRAP += ("(gateway:", "<frozen runpy>")


def _idle_wait() -> str:
    """The frame of an inference thread waiting for its next job (py-spy may count that
    wait as running): ``_serve (.../threads.py:LINE)`` of its ``queue.get()``."""
    lines, first = inspect.getsourcelines(threads._serve)
    line = first + next(i for i, text in enumerate(lines) if "queue.get()" in text)
    return f"threads.py:{line})"


IDLE_WAIT = _idle_wait()


def step_of(stack: Sequence[str]) -> str:
    """The step a sample belongs to; ``stack`` runs from the outermost frame in. A sample
    whose innermost frame is the inference thread's wait for work is ``IDLE``; one
    with no frame below the bootstrap is the event loop itself, in C (uvloop's I/O,
    httptools' parser, callbacks)."""
    if stack and stack[-1].startswith("_serve (") and stack[-1].endswith(IDLE_WAIT):
        return IDLE
    for frame in reversed(stack):
        if any(needle in frame for needle in BOOTSTRAP):
            continue
        for step, needles in STEPS:
            if any(needle in frame for needle in needles):
                return step
    return OTHER


def read_samples(path: Path) -> Counter[str]:
    """py-spy's raw output (``frame;frame;... count`` per line) as samples per step."""
    steps: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            steps[step_of(stack.split(";"))] += int(count)
    steps.pop(IDLE, None)
    return steps


# the metrics a profile reads: batch sizes, queue waits, run times
PROFILED = (
    "gateway_batch_size",
    "gateway_queue_duration_seconds",
    "gateway_inference_duration_seconds",
)


@dataclass
class Snapshot:
    cpu_s: float
    metrics: dict[str, float] = field(default_factory=dict)


def snapshot(url: str, pid: int, model: str) -> Snapshot:
    text = httpx.get(f"{url}/metrics").text
    return Snapshot(cpu_seconds(pid), metric_totals(text, model, PROFILED))


def batch_distribution(before: dict[str, float], after: dict[str, float]) -> str:
    """Share of batches by size range, from the histogram's cumulative buckets."""
    prefix = "gateway_batch_size_bucket|"
    bounds = sorted((float(k.removeprefix(prefix)), k) for k in after if k.startswith(prefix))
    total = after.get("gateway_batch_size_count", 0) - before.get("gateway_batch_size_count", 0)
    if not total:
        return "no batches"
    parts, below, low = [], 0.0, 0.0
    for bound, key in bounds:
        cumulative = after[key] - before.get(key, 0.0)
        share = (cumulative - below) / total
        if share >= 0.005:
            label = f"<= {bound:g}" if low == 0 else f"{low:g}-{bound:g}"
            parts.append(f"{label}: {share:.0%}")
        below, low = cumulative, bound
    return ", ".join(parts)


def mean(before: dict[str, float], after: dict[str, float], name: str) -> float:
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
    return total / count if count else float("nan")


def _py_spy() -> str:
    """py-spy from this virtual environment (the loadtest extra), else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def profile_level(
    args: argparse.Namespace, url: str, pid: int, model: str, body: Path, connections: int
) -> dict[str, object]:
    infer = f"{url}/v2/models/{model}/infer"
    wrk = ["wrk", "-t1", f"-c{connections}", f"-d{round(args.duration)}s", "--timeout", "10s"]
    wrk += ["-s", str(Path(__file__).with_name("wrk_post.lua")), infer, "--", str(body)]
    with tempfile.TemporaryDirectory(prefix="gateway-profile-") as scratch:
        raw = Path(scratch) / "samples.txt"
        spy = [_py_spy(), "record", "-p", str(pid), "-r", str(args.rate), "-f", "raw"]
        spy += ["-o", str(raw), "-d", str(max(1, round(args.duration) - 1)), "--nonblocking"]
        before = snapshot(url, pid, model)
        load = subprocess.Popen(_pinned(args.client_cpu, wrk), stdout=subprocess.PIPE, text=True)
        sampler = subprocess.run(_pinned(args.client_cpu, spy), capture_output=True, text=True)
        output, _ = load.communicate(timeout=args.duration + 60)
        after = snapshot(url, pid, model)
        if sampler.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed: {sampler.stderr.strip()[-400:]}")
        samples = read_samples(raw)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(raw, args.keep / f"{model}-{connections}c.txt")
    line = next(x for x in output.splitlines() if x.startswith("WRK_JSON "))
    summary = json.loads(line.removeprefix("WRK_JSON "))
    requests, duration_us = int(summary["requests"]), int(summary["duration_us"])
    cpu_us = (after.cpu_s - before.cpu_s) / max(requests, 1) * 1e6
    total = sum(samples.values()) or 1
    m = before.metrics, after.metrics
    return {
        "req/s": requests / (duration_us / 1e6),
        "CPU us/request": cpu_us,
        "steps": {step: cpu_us * n / total for step, n in samples.items()},
        "mean batch": mean(*m, "gateway_batch_size"),
        "batches": batch_distribution(*m),
        "queue wait us": mean(*m, "gateway_queue_duration_seconds") * 1e6,
        "run us per batch": mean(*m, "gateway_inference_duration_seconds") * 1e6,
        "samples": total,
    }


def print_profile(results: dict[str, dict[str, object]]) -> None:
    columns = list(results)
    width = max(14, *(len(c) + 2 for c in columns))
    print(f"{'us per request':<22}" + "".join(f"{c:>{width}}" for c in columns))
    order = [step for step, _ in STEPS] + [OTHER]
    for step in order:
        cells = [results[c]["steps"].get(step, 0.0) for c in columns]  # type: ignore[attr-defined]
        print(f"{step:<22}" + "".join(f"{v:>{width}.1f}" for v in cells))
    for key, fmt in [
        ("CPU us/request", ".1f"),
        ("req/s", ",.0f"),
        ("mean batch", ".1f"),
        ("queue wait us", ".0f"),
        ("run us per batch", ".0f"),
        ("samples", ",d"),
    ]:
        print(f"{key:<22}" + "".join(f"{results[c][key]:>{width}{fmt}}" for c in columns))
    print("\nbatch sizes (share of batches):")
    for c in columns:
        print(f"  {c}: {results[c]['batches']}")
    print(
        "\nsteps: CPU time per request (server, all threads) split by py-spy's samples; "
        "queue wait and run: wall-clock means from the gateway's metrics"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "wide"])
    parser.add_argument("--connections", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per level")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw samples in this directory")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="gateway-profile-") as scratch:
        base = Path(scratch)
        repository = write_repository(base / "models", 32, 2.0)
        bodies = _bodies(base, args.models)
        port = _free_port()
        server = _start_server("gateway", repository, port, args.server_cpu)
        url = f"http://127.0.0.1:{port}"
        try:
            for model in args.models:
                for connections in args.connections:
                    print(f"{model} {connections}c ...", flush=True)
                    warm = argparse.Namespace(
                        **{**vars(args), "duration": 1.0, "rate": 10, "keep": None}
                    )
                    profile_level(warm, url, server.pid, model, bodies[model], 8)
                    results[f"{model} {connections}c"] = profile_level(
                        args, url, server.pid, model, bodies[model], connections
                    )
        finally:
            _stop(server)
    print()
    print_profile(results)


if __name__ == "__main__":
    main()
