"""What drift monitoring costs: the same gateway serving the same models with and without
a profile.json, side by side in alternating rounds (as ``compare.py`` does), and the time
to bin one batch of each model's columns.

    .venv/bin/python -m loadtests.drift_cost [--models mlp wide] [--connections 64]

"candidate" is monitoring on, "baseline" off: a ratio of 0.95 is 5% fewer requests per
second with monitoring.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.cli.profile import build_version_profile
from gateway.monitoring.binning import Binner
from gateway.monitoring.profile import load_profile
from loadtests.benchmark import _bodies, _free_port, _start_server, _stop
from loadtests.compare import compare
from loadtests.reference_models import input_width, write_repository

SAMPLE_ROWS = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "wide"])
    parser.add_argument("--connections", nargs="+", type=int, default=[64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--batch-rows", type=int, default=32, help="rows per timed batch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-drift-cost-") as scratch:
        base = Path(scratch)
        off = write_repository(base / "off", 32, 2.0)
        on = base / "on"
        shutil.copytree(off, on)
        rng = np.random.default_rng(7)
        for model in args.models:
            sample = base / f"{model}.npy"
            width = input_width(model)
            np.save(sample, rng.standard_normal((SAMPLE_ROWS, width)).astype(np.float32))
            _, summary = build_version_profile(sample, on, model, 1, 10)
            print(summary, flush=True)
        for model in args.models:
            print(binning_time(on / model / "1" / "profile.json", model, args.batch_rows, rng))
        bodies = _bodies(base, args.models)
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for name, repository in (("candidate", on), ("baseline", off)):
                port = _free_port()
                servers[name] = (_start_server("gateway", repository, port, args.server_cpu), port)
            print("candidate: monitoring on, baseline: monitoring off", flush=True)
            for model in args.models:
                for connections in args.connections:
                    compare(args, servers, model, connections, bodies[model])
        finally:
            for process, _ in servers.values():
                _stop(process)


def binning_time(profile_path: Path, model: str, rows: int, rng: np.random.Generator) -> str:
    """The median time to bin one batch of ``rows`` rows (inputs and outputs)."""
    profile = load_profile(profile_path)
    binner = Binner(profile)
    batch = {
        column.tensor: rng.standard_normal(
            (rows, 1 + max(c.index for c in profile.columns if c.tensor == column.tensor))
        )
        for column in profile.columns
    }
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        binner.counts(batch)
        timings.append(time.perf_counter() - started)
    median_us = statistics.median(timings) * 1e6
    return (
        f"{model}: binning a batch of {rows} rows x {len(profile.columns)} columns takes "
        f"{median_us:,.0f} us (median of 200), {median_us / rows:.1f} us per row"
    )


if __name__ == "__main__":
    main()
