"""Noticing that a caller hung up, without a task per request.

uvicorn does not cancel a handler when its client disconnects; its ASGI
``receive`` is a bound method of the request cycle, whose ``disconnected`` flag
turns true when the connection drops. The batcher asks this probe just before a
batch runs and drops requests whose caller is gone, so they never run.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Receive

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; never delivered


def disconnect_probe(receive: Receive) -> Callable[[], bool] | None:
    """A cheap "has the caller gone?" check, or None when the server offers no such flag."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not hasattr(cycle, "disconnected"):
        return None
    return lambda: bool(cycle.disconnected)
