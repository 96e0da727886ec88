"""Dropping the work of a caller that hung up.

uvicorn does not cancel a handler when its client disconnects; it only answers
``receive()`` with ``http.disconnect``. While a request waits for its batch, a
watcher listens for that and cancels the handler's task, so the request leaves
the queue and never runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; never sent


class ClientGone(Exception):
    """The caller disconnected before its answer was ready."""


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        message = await receive()
        if message["type"] == "http.disconnect":
            gone = True
            task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()
