"""RepositoryWatcher: polls the repository and applies what changed (hot swap).

Polling (every ``--poll-interval`` seconds) works on every filesystem, including
the network and overlay volumes models are usually mounted from, and a change is
applied only once it has looked the same for one whole interval, so a file that
is still being copied in is never loaded half-written.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.repository.registry import ModelRegistry

log = logging.getLogger("gateway.repository")


class RepositoryWatcher:
    """Owns one task; enter it after the registry and leave it before."""

    def __init__(self, registry: ModelRegistry, interval_s: float) -> None:
        self._registry = registry
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RepositoryWatcher:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="repository watch")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                changed = await self._registry.refresh()
            except Exception:  # a bad poll must not end the watching
                log.exception("repository poll failed; trying again in %g s", self._interval_s)
                continue
            if changed:
                log.info("repository changes applied: %s", ", ".join(changed))
