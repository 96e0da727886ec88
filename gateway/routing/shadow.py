"""ShadowScheduler: copies of requests, run on the shadow version after the caller has its answer.

It owns every shadow task: at most ``max_in_flight`` run at once, and a request
that would exceed that is dropped and counted (never queued without bound, never
waited for). A shadow's latency or failure never reaches the caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import orjson

from gateway.errors import GatewayError
from gateway.routing.compare import Comparison, compare

log = logging.getLogger("gateway.shadow")
_LOGGED_VALUES = 64  # per output, so a log line stays small


class ShadowTarget(Protocol):
    """The shadow version, as far as a shadow run needs it."""

    label: str

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]
    ) -> Coroutine[Any, Any, list[np.ndarray]]: ...


class ShadowObserver(Protocol):
    def shadow_done(
        self,
        model: str,
        primary: str,
        shadow: str,
        disagrees: bool | None,
        max_abs_diff: float | None,
    ) -> None: ...
    def shadow_dropped(self, model: str, primary: str, shadow: str) -> None: ...


@dataclass(slots=True)
class ShadowJob:
    model: str
    request_id: str
    primary: str  # version label
    target: ShadowTarget
    inputs: Mapping[str, np.ndarray]
    output_names: Sequence[str]
    primary_outputs: Sequence[np.ndarray]
    # told how the run ended (its outputs, or why there are none), once: the payload log
    on_done: Callable[[Sequence[np.ndarray] | None, str | None], None] | None = None

    def done(self, outputs: Sequence[np.ndarray] | None, error: str | None = None) -> None:
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            on_done(outputs, error)


class ShadowScheduler:
    def __init__(
        self, observer: ShadowObserver, log_path: Path | None = None, max_in_flight: int = 64
    ) -> None:
        self._observer = observer
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._log: IO[bytes] | None = log_path.open("ab") if log_path else None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def try_spawn(self, job: ShadowJob) -> bool:
        """Start the shadow run, or drop it (and count it) when too many are running."""
        if len(self._tasks) >= self._max_in_flight:
            self._observer.shadow_dropped(job.model, job.primary, job.target.label)
            job.done(None, "dropped: too many shadow runs in flight")
            return False
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def aclose(self, timeout_s: float) -> None:
        """Give running shadows ``timeout_s`` to finish, cancel the rest, close the log."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def _run(self, job: ShadowJob) -> None:
        try:
            await self._compare(job)
        finally:  # cancelled at shutdown, say: the record still goes
            job.done(None, "the shadow run was cancelled")

    async def _compare(self, job: ShadowJob) -> None:
        shadow = job.target.label
        try:
            outputs = await job.target.run(job.inputs, job.output_names)
        except GatewayError as exc:
            self._observer.shadow_done(job.model, job.primary, shadow, None, None)
            self._write(job, None, None, exc.message)
            job.done(None, exc.message)
            return
        except Exception as exc:  # a broken shadow is data, not an outage
            log.warning(
                "shadow %s v%s failed on request %s: %s",
                job.model,
                shadow,
                job.request_id,
                exc,
                extra={"request_id": job.request_id},
            )
            self._observer.shadow_done(job.model, job.primary, shadow, None, None)
            self._write(job, None, None, str(exc))
            job.done(None, str(exc))
            return
        job.done(outputs)
        comparison = compare(job.output_names, job.primary_outputs, outputs)
        if comparison.mismatch:
            self._observer.shadow_done(job.model, job.primary, shadow, None, None)
        else:
            diff = comparison.max_abs_diff
            self._observer.shadow_done(
                job.model, job.primary, shadow, comparison.disagrees, None if diff != diff else diff
            )
        self._write(job, outputs, comparison, comparison.mismatch)

    def _write(
        self,
        job: ShadowJob,
        outputs: Sequence[np.ndarray] | None,
        comparison: Comparison | None,
        error: str | None,
    ) -> None:
        if self._log is None:
            return
        entry: dict[str, object] = {
            "request_id": job.request_id,
            "model": job.model,
            "primary_version": job.primary,
            "shadow_version": job.target.label,
            "primary": _sample(job.output_names, job.primary_outputs),
        }
        if outputs is not None:
            entry["shadow"] = _sample(job.output_names, outputs)
        if comparison is not None:
            entry["disagreeing_rows"] = comparison.disagreeing_rows
            entry["max_abs_diff"] = comparison.max_abs_diff
        if error:
            entry["error"] = error
        self._log.write(orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._log.flush()


def _sample(names: Sequence[str], outputs: Sequence[np.ndarray]) -> dict[str, object]:
    sampled: dict[str, object] = {}
    for name, array in zip(names, outputs, strict=True):
        flat = array.ravel()[:_LOGGED_VALUES]
        sampled[name] = (
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
            if array.dtype.kind in "OSU"
            else np.ascontiguousarray(flat)
        )
    return sampled
