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


_SAMPLE = re.compile(r"^(gateway_[a-z_]+)\{([^}]*)\} (\S+)$", re.MULTILINE)


def metric_totals(text: str, model: str, families: tuple[str, ...]) -> dict[str, float]:
    """The samples of ``model`` whose metric names start with one of ``families``, from a
    /metrics text, keyed ``name`` or ``name|le`` (histogram buckets), summed over versions."""
    totals: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if f'model="{model}"' not in labels or not name.startswith(families):
            continue
        bound = re.search(r'le="([^"]+)"', labels)
        key = f"{name}|{bound.group(1)}" if bound else name
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def batch_totals(base_url: str, model: str) -> tuple[float, float]:
    """The gateway's ``gateway_batch_size`` sum and count for ``model`` (all versions):
    rows run and batches run so far. (0, 0) from a server without that metric."""
    try:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0, 0.0
    totals = metric_totals(text, model, ("gateway_batch_size",))
    return totals.get("gateway_batch_size_sum", 0.0), totals.get("gateway_batch_size_count", 0.0)
