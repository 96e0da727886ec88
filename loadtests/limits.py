"""The gateway against what its stack allows on one core, from the benchmark's rows.

- **floor**: the bare ASGI app of floor_server.py on the same server stack, which only
  reads and parses the body and answers a fixed body: the gateway's share of its req/s.
- **one-core limit**: the floor's CPU per request plus one row of ``session.run`` at the
  batch size the gateway actually ran (its mean ``gateway_batch_size`` during the
  level), interpolated between the in-process ceiling's measured batch sizes: 1e6 over
  that many microseconds is the most requests per second one core could answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Measured(Protocol):
    server: str
    model: str
    mode: str
    level: str
    rps: float
    cpu_us: float
    batch: float


@dataclass
class Limit:
    model: str
    level: str
    server: str
    rps: float
    floor_rps: float
    floor_cpu_us: float
    batch: float
    row_us: float

    @property
    def limit_rps(self) -> float:
        return 1e6 / (self.floor_cpu_us + self.row_us)

    @property
    def of_floor(self) -> float:
        return self.rps / self.floor_rps

    @property
    def of_limit(self) -> float:
        return self.rps / self.limit_rps


def row_cost_us(rows_per_s: dict[int, float], batch: float) -> float:
    """Microseconds of ``session.run`` per row at a mean batch size, interpolated in
    log(batch size) between the sizes measured (clamped to them)."""
    sizes = sorted(rows_per_s)
    costs = [1e6 / rows_per_s[size] for size in sizes]
    at = min(max(batch, sizes[0]), sizes[-1])
    return float(np.interp(math.log(at), [math.log(s) for s in sizes], costs))


def limits(rows: Sequence[Measured], servers: Sequence[str] = ("gateway",)) -> list[Limit]:
    """One Limit per closed-loop level of each of ``servers`` that has a floor row and an
    in-process ceiling for its model."""
    ceiling: dict[str, dict[int, float]] = {}
    floors = {}
    for row in rows:
        if row.mode == "in-process":
            ceiling.setdefault(row.model, {})[int(row.level.split()[-1])] = row.rps
        elif row.server == "floor" and row.mode == "closed":
            floors[row.model, row.level] = row
    found = []
    for row in rows:
        floor = floors.get((row.model, row.level))
        if row.server not in servers or row.mode != "closed" or floor is None:
            continue
        if row.model not in ceiling or math.isnan(row.batch):
            continue
        found.append(
            Limit(
                row.model,
                row.level,
                row.server,
                row.rps,
                floor.rps,
                floor.cpu_us,
                row.batch,
                row_cost_us(ceiling[row.model], row.batch),
            )
        )
    return found


def print_limits(found: Sequence[Limit]) -> None:
    if not found:
        return
    print()
    header = (
        f"{'server':<16} {'model':<5} {'level':<6} {'req/s':>8} {'floor':>8} {'of floor':>8} "
        f"{'batch':>6} {'floor us':>8} {'row us':>7} {'limit':>8} {'of limit':>8}"
    )
    print(header)
    print("-" * len(header))
    for x in found:
        print(
            f"{x.server:<16} {x.model:<5} {x.level:<6} {x.rps:8.0f} {x.floor_rps:8.0f} "
            f"{x.of_floor:8.1%} {x.batch:6.1f} {x.floor_cpu_us:8.0f} {x.row_us:7.0f} "
            f"{x.limit_rps:8.0f} {x.of_limit:8.1%}"
        )
    print(
        "floor: the bare ASGI app (floor_server.py); limit: 1e6 / (floor CPU us per request "
        "+ one row of session.run at the gateway's mean batch size)"
    )
