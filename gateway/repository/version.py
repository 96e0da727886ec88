"""A loaded, warmed-up model version: its signature, config, and the batcher in front of it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.batching.assemble import stack
from gateway.batching.observer import BatchObserver
from gateway.batching.policy import BatchPolicy
from gateway.batching.queue import BatchQueue
from gateway.batching.request import PendingInputs
from gateway.batching.ticket import Ticket
from gateway.errors import ModelNotReady
from gateway.monitoring.outputs import OutputSample
from gateway.monitoring.window import DriftWindow
from gateway.protocol.signature import Signature
from gateway.repository.session import OnnxModel
from gateway.repository.spec import ModelConfig
from gateway.repository.threads import InstanceThreads

log = logging.getLogger("gateway.repository")


def version_summary(numbers: Iterable[int]) -> str:
    """Version numbers as messages name them: ``1, 2, 5`` (in order), or ``none``."""
    return ", ".join(str(number) for number in sorted(numbers)) or "none"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    model: str
    version: int
    path: Path
    sha256: str
    providers: tuple[str, ...]


def batch_policy(config: ModelConfig, signature: Signature) -> BatchPolicy:
    """The batcher's policy; a model whose inputs or outputs lack a batch dimension runs
    each request on its own."""
    batching = config.batching
    batchable = all(s.has_batch_dim for s in (*signature.inputs, *signature.outputs))
    return BatchPolicy(
        max_batch_size=batching.max_batch_size if batchable else 0,
        max_delay_s=batching.max_queue_delay_ms / 1000,
        preferred_batch_sizes=frozenset(batching.preferred_batch_sizes),
        max_queue_size=batching.max_queue_size,
        default_timeout_s=batching.timeout_ms / 1000 or None,
    )


class ModelVersion:
    """Requests go through the version's BatchQueue; each of ``[runtime] instances``
    sessions runs one batch at a time, on its own thread."""

    def __init__(
        self,
        info: VersionInfo,
        config: ModelConfig,
        model: OnnxModel,
        observer: BatchObserver | None = None,
        drift: DriftWindow | None = None,
        drift_problem: str | None = None,
    ) -> None:
        """``drift``: the window this version's batches are binned into (its profile.json
        and [monitoring] allow it); ``drift_problem``: why it has none, if it should."""
        self.info = info
        self.drift = drift
        self.drift_problem = drift_problem
        # set by a rollout's controller while it compares this version's outputs
        self.output_sample: OutputSample | None = None
        self.config = config
        self.signature: Signature = model.signature
        self.label = str(info.version)
        self.label_bytes = self.label.encode()  # the x-model-version header value
        self.policy = batch_policy(config, model.signature)
        self.released = False
        self._model = model
        self._threads = InstanceThreads(
            len(model.sessions), f"inference {info.model} v{info.version}"
        )
        self.batcher = BatchQueue(
            self._run_batch,
            self.policy,
            instances=len(model.sessions),
            observer=observer,
            name=f"model '{info.model}' version {info.version}",
        )

    def start(self) -> None:
        """Bind the batcher to the event loop that will serve requests."""
        self.batcher.start()

    async def aclose(self) -> None:
        """Finish queued and running requests, then stop the inference threads."""
        await self.batcher.aclose()
        self.release()

    async def retire(self, timeout_s: float) -> None:
        """Like aclose, but give up waiting after ``timeout_s`` (requests still waiting
        then fail with 503); the sessions are released either way."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.batcher.aclose()
        except TimeoutError:
            log.warning(
                "model %s version %d still busy after %g s; releasing it anyway",
                self.info.model,
                self.info.version,
                timeout_s,
            )
        finally:
            self.release()

    def release(self) -> None:
        """Stop the inference threads once the jobs already handed to them are done;
        requests still queued, or arriving later, are answered 503."""
        self.released = True
        self.batcher.close()
        self._threads.close()

    @property
    def retired(self) -> bool:
        """Whether this version takes no more requests (unloaded, or being drained)."""
        return self.batcher.closing

    def expect(self) -> Ticket:
        return self.batcher.expect()

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str],
        timeout_ms: float | None = None,
        ticket: Ticket | None = None,
        gone: Callable[[], bool] | None = None,
        pending: PendingInputs | None = None,
    ) -> Coroutine[Any, Any, list[np.ndarray]]:
        """The request's output rows, once its batch has run (the batcher's own awaitable:
        no coroutine of its own in between, on the path every request takes)."""
        timeout_s = timeout_ms / 1000 if timeout_ms else None
        return self.batcher.submit(inputs, output_names, timeout_s, ticket, gone, pending)

    def _run_batch(
        self,
        instance: int,
        parts: Sequence[Mapping[str, np.ndarray]],
        output_names: Sequence[str],
    ) -> asyncio.Future[list[np.ndarray]]:
        """Run the batch of ``parts`` (each request's inputs) on ``instance``'s thread,
        where its inputs are also joined (see ``batching.queue.RunBatch``)."""
        if self.released:  # its threads have stopped: a job handed to them would never end
            failed: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
            failed.set_exception(
                ModelNotReady(f"model '{self.info.model}' version {self.label} was unloaded")
            )
            return failed
        # a plain future: no coroutine or task per batch
        if self.drift is None and self.output_sample is None:
            return self._threads.submit(instance, self._run_joined, instance, parts, output_names)
        return self._threads.submit(instance, self._run_observed, instance, parts, output_names)

    def _run_joined(
        self,
        instance: int,
        parts: Sequence[Mapping[str, np.ndarray]],
        output_names: Sequence[str],
    ) -> list[np.ndarray]:
        return self._model.run(instance, stack(parts), output_names)

    def _run_observed(
        self,
        instance: int,
        parts: Sequence[Mapping[str, np.ndarray]],
        output_names: Sequence[str],
    ) -> list[np.ndarray]:
        """Run the batch, then keep its outputs for a rollout's comparison and bin its
        inputs and outputs for drift monitoring (on the inference thread, where
        the batch already is: the event loop never pays for it)."""
        inputs = stack(parts)
        outputs = self._model.run(instance, inputs, output_names)
        sample = self.output_sample
        if sample is not None:
            try:
                sample.observe(dict(zip(output_names, outputs, strict=True)))
            except Exception:  # a rollout's comparison must never fail a batch that ran
                self.output_sample = None
                log.exception(
                    "model %s version %d: sampling outputs failed",
                    self.info.model,
                    self.info.version,
                )
        drift = self.drift
        if drift is not None:
            try:
                drift.observe({**inputs, **dict(zip(output_names, outputs, strict=True))})
            except Exception:  # monitoring must never fail a batch that ran
                self.drift = None
                log.exception(
                    "model %s version %d: drift monitoring failed and is off for this "
                    "version until it reloads",
                    self.info.model,
                    self.info.version,
                )
        return outputs
