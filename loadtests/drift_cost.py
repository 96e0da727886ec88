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
import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.cli.profile import build_version_profile
from gateway.monitoring.binning import Binner
from gateway.monitoring.profile import load_profile
from loadtests.benchmark import ROOT, _bodies
from loadtests.compare import Arm, add_round_options, side_by_side
from loadtests.reference_models import input_width, write_repository

SAMPLE_ROWS = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_round_options(parser, ["mlp", "wide"], [64])
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
        arms: dict[str, Arm] = {"candidate": (on, [], ROOT), "baseline": (off, [], ROOT)}
        banner = "candidate: monitoring on, baseline: monitoring off"
        side_by_side(args, arms, _bodies(base, args.models), banner)


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
