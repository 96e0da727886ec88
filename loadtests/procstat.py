"""What a server process costs: its CPU time, and the gateway's batch sizes, read from
outside while a load generator drives it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all of its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_totals(base_url: str, model: str) -> tuple[float, float]:
    """The gateway's ``gateway_batch_size`` sum and count for ``model`` (all versions):
    rows run and batches run so far. (0, 0) from a server without that metric."""
    try:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0, 0.0
    totals = []
    for part in ("sum", "count"):
        pattern = rf'^gateway_batch_size_{part}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$'
        totals.append(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))
    return totals[0], totals[1]
