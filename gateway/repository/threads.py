"""One inference thread per session instance, handing results back to the event loop.

A dedicated thread per instance (instead of a shared pool) fits the batcher's
rule that an instance runs one batch at a time, and the hand-off is as short as
Python allows: a C ``SimpleQueue`` in, ``call_soon_threadsafe`` out. On a model
that runs in microseconds this hand-off is most of the cost of a request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


class InstanceThreads:
    """``count`` threads; ``submit(i, fn, *args)`` runs ``fn`` on thread ``i``."""

    def __init__(self, count: int, name: str) -> None:
        self._queues: list[SimpleQueue[_Job | None]] = [SimpleQueue() for _ in range(count)]
        self._threads = [
            threading.Thread(target=_serve, args=(queue,), name=f"{name} #{i}", daemon=True)
            for i, queue in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, instance: int, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queues[instance].put((loop, future, fn, args))
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the jobs already handed over, then stop the threads."""
        for queue in self._queues:
            queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)


def _serve(queue: SimpleQueue[_Job | None]) -> None:
    while (job := queue.get()) is not None:
        loop, future, fn, args = job
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as exc:  # handed to the awaiting request, not raised here
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(_complete, future, *outcome)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass


def _complete(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
