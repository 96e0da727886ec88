"""Running the app under uvicorn, one process or several."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from functools import partial
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.config import WORKER_DIRECTORY_ENV, Settings
from gateway.http.connection import LimitedHttpProtocol
from gateway.protocol.tensors import quiet_float_casts
from gateway.workers import shared_directory

KEEP_ALIVE_S = 5  # idle keep-alive connections close after this (SPEC section 10)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, except that a signal which led to a clean drain exits with status 0.

    uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process
    would die "killed by signal"; for an orchestrator, a drained gateway has
    succeeded.
    """

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        quiet_float_casts()
        super().run(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config's keyword arguments for these settings (the tests' servers use them
    too, so they run under the same limits)."""
    return dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # uvicorn's httptools protocol, plus the header size limit and read timeout it lacks
        http=partial(
            LimitedHttpProtocol,
            max_header_bytes=settings.max_header_bytes,
            read_timeout=settings.read_timeout,
        ),
        timeout_keep_alive=KEEP_ALIVE_S,
        access_log=False,  # a log line per request costs throughput
        log_config=None,  # gateway.logs configured the root logger
        timeout_graceful_shutdown=settings.drain_timeout or None,
        server_header=False,
        proxy_headers=False,  # one ASGI layer less per request; nothing here reads client IPs
    )


def run(settings: Settings) -> None:
    options = uvicorn_options(settings)
    if settings.workers == 1:
        GatewayServer(uvicorn.Config(create_app(settings), **options)).run()
        return
    with shared_directory() as directory:
        # each worker process rebuilds the same Settings from the environment
        os.environ.update({**settings.to_environment(), WORKER_DIRECTORY_ENV: str(directory)})
        uvicorn.run(
            "gateway.app:app_from_environment", factory=True, workers=settings.workers, **options
        )
