"""The worker processes of one gateway (``--workers N``) and the directory they share.

``gateway serve`` makes the directory before it starts its workers and removes it
once they have all exited. In it, prometheus_client keeps every worker's metric
values (so any worker's ``/metrics`` answers the sum over all of them), and each
worker leaves a mark while it is ready, so any worker's readiness answer speaks for
the whole group: a load balancer that sends traffic to a half-started gateway would
send it to fewer processes than it was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from gateway.metrics import worker_gone, workers_with_gauges
from gateway.processes import alive

_READY_PREFIX = "ready-"


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A private directory for one run of the gateway's workers, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="gateway-workers-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class WorkerGroup:
    """This worker's view of the group: mark itself ready, tell whether all are."""

    def __init__(self, directory: Path, size: int, pid: int | None = None) -> None:
        self.directory = directory
        self.size = size
        self.pid = os.getpid() if pid is None else pid
        self._mark = directory / f"{_READY_PREFIX}{self.pid}"

    def joined(self, ready: bool) -> None:
        """This worker has loaded its repository; also clears what dead workers left."""
        for pid in self._dead_pids():
            self._forget(pid)
        self.report(ready)

    def report(self, ready: bool) -> None:
        """Whether this worker can answer (its models may fail or leave later)."""
        if ready:
            self._mark.touch()
        else:
            self._mark.unlink(missing_ok=True)

    async def report_every(self, seconds: float, ready: Callable[[], bool]) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.report(ready())

    def left(self) -> None:
        """This worker is shutting down (its gauges no longer count)."""
        self._forget(self.pid)

    def all_ready(self) -> bool:
        return len(self._ready_pids()) >= self.size

    def _ready_pids(self) -> list[int]:
        return [pid for pid in self._marked_pids() if alive(pid)]

    def _dead_pids(self) -> set[int]:
        # a worker killed outright leaves its mark and its live gauges behind
        pids = set(self._marked_pids()) | workers_with_gauges(self.directory)
        return {pid for pid in pids if pid != self.pid and not alive(pid)}

    def _marked_pids(self) -> list[int]:
        pids = []
        for path in self.directory.glob(f"{_READY_PREFIX}*"):
            with contextlib.suppress(ValueError):
                pids.append(int(path.name.removeprefix(_READY_PREFIX)))
        return pids

    def _forget(self, pid: int) -> None:
        (self.directory / f"{_READY_PREFIX}{pid}").unlink(missing_ok=True)
        worker_gone(self.directory, pid)
