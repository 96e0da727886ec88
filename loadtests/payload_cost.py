"""What the payload log costs: the same gateway serving the same models with every
request logged to a file (``--payload-log file:///DIR``) and with no log, side by side
in alternating rounds (as ``compare.py`` does), then the size of what was logged.

    .venv/bin/python -m loadtests.payload_cost [--models mlp] [--connections 64]

"candidate" is logging on, "baseline" off: a ratio of 0.95 is 5% fewer requests per
second with every request logged.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from loadtests.benchmark import ROOT, _bodies
from loadtests.compare import Arm, add_round_options, side_by_side
from loadtests.reference_models import write_repository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_round_options(parser, ["mlp"], [64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-payload-cost-") as scratch:
        base = Path(scratch)
        repository = write_repository(base / "models", 32, 2.0)
        log = base / "log"
        arms: dict[str, Arm] = {
            "candidate": (repository, ["--payload-log", f"file://{log}"], ROOT),
            "baseline": (repository, [], ROOT),
        }
        banner = "candidate: every request logged to a file, baseline: no payload log"
        side_by_side(args, arms, _bodies(base, args.models), banner)
        files = list(log.glob("payload-*.jsonl"))
        lines = sum(path.read_bytes().count(b"\n") for path in files)
        size = sum(path.stat().st_size for path in files)
        if lines:
            print(
                f"logged {lines:,} records in {size / 2**20:.1f} MiB: {size / lines:.0f} bytes each"
            )


if __name__ == "__main__":
    main()
