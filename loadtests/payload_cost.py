"""What the payload log costs: the same gateway serving the same models with every
request logged to a file (``--payload-log file:///DIR``) and with no log, side by side
in alternating rounds (as ``compare.py`` does), then the size of what was logged.

    .venv/bin/python -m loadtests.payload_cost [--models mlp] [--connections 64]

"candidate" is logging on, "baseline" off: a ratio of 0.95 is 5% fewer requests per
second with every request logged.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from loadtests.benchmark import _bodies, _free_port, _start_server, _stop
from loadtests.compare import compare
from loadtests.reference_models import write_repository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp"])
    parser.add_argument("--connections", nargs="+", type=int, default=[64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-payload-cost-") as scratch:
        base = Path(scratch)
        repository = write_repository(base / "models", 32, 2.0)
        log = base / "log"
        bodies = _bodies(base, args.models)
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            for name, extra in (
                ("candidate", ["--payload-log", f"file://{log}"]),
                ("baseline", []),
            ):
                port = _free_port()
                process = _start_server("gateway", repository, port, args.server_cpu, extra)
                servers[name] = (process, port)
            print("candidate: every request logged to a file, baseline: no payload log", flush=True)
            for model in args.models:
                for connections in args.connections:
                    compare(args, servers, model, connections, bodies[model])
        finally:
            for process, _ in servers.values():
                _stop(process)
        files = list(log.glob("payload-*.jsonl"))
        lines = sum(path.read_bytes().count(b"\n") for path in files)
        size = sum(path.stat().st_size for path in files)
        if lines:
            print(
                f"logged {lines:,} records in {size / 2**20:.1f} MiB: {size / lines:.0f} bytes each"
            )


if __name__ == "__main__":
    main()
