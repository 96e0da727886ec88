"""A loaded, warmed-up model version that requests can run on."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        self._free: asyncio.Queue[int] = asyncio.Queue(maxsize=len(model.sessions))
        for instance in range(len(model.sessions)):
            self._free.put_nowait(instance)

    async def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> list[np.ndarray]:
        instance = await self._free.get()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._model.run, instance, inputs, output_names
            )
        finally:
            self._free.put_nowait(instance)
