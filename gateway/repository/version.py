"""A loaded, warmed-up model version that requests can run on."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.errors import DeadlineExceeded, QueueFull
from gateway.protocol.signature import Signature
from gateway.repository.session import OnnxModel
from gateway.repository.spec import ModelConfig


@dataclass(frozen=True, slots=True)
class VersionInfo:
    model: str
    version: int
    path: Path
    sha256: str
    providers: tuple[str, ...]


class ModelVersion:
    """Runs inference on one version, at most ``[runtime] instances`` runs at a time.

    Invariant: each session instance serves one run at a time; a run holds its
    instance from dispatch to completion, and always gives it back.
    """

    def __init__(
        self, info: VersionInfo, config: ModelConfig, model: OnnxModel, executor: Executor
    ) -> None:
        self.info = info
        self.config = config
        self.signature: Signature = model.signature
        self.label = str(info.version)
        self._model = model
        self._executor = executor
        self._waiting = 0
        self._free: asyncio.Queue[int] = asyncio.Queue(maxsize=len(model.sessions))
        for instance in range(len(model.sessions)):
            self._free.put_nowait(instance)

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        timeout_ms: float | None = None,
    ) -> list[np.ndarray]:
        """Run once a session instance is free.

        Raises QueueFull when ``max_queue_size`` requests are already waiting, and
        DeadlineExceeded when no instance frees up within the request's timeout
        (``timeout_ms``, else ``[batching] timeout_ms``; 0 means none); an expired
        request never runs.
        """
        batching = self.config.batching
        if self._free.empty() and self._waiting >= batching.max_queue_size:
            raise QueueFull(
                f"model '{self.info.model}' version {self.label} already has {self._waiting} "
                f"requests waiting ([batching] max_queue_size = {batching.max_queue_size}); "
                "retry after the Retry-After interval"
            )
        deadline_ms = timeout_ms or batching.timeout_ms
        self._waiting += 1
        try:
            if deadline_ms:
                async with asyncio.timeout(deadline_ms / 1000):
                    instance = await self._free.get()
            else:
                instance = await self._free.get()
        except TimeoutError:
            raise DeadlineExceeded(
                f"request waited {deadline_ms:g} ms (its timeout_ms) for model "
                f"'{self.info.model}' version {self.label} without starting; the model is busy"
            ) from None
        finally:
            self._waiting -= 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._model.run, instance, inputs, output_names
            )
        finally:
            self._free.put_nowait(instance)
