"""Running the app under uvicorn, one process or several."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.config import WORKER_DIRECTORY_ENV, Settings
from gateway.protocol.tensors import quiet_float_casts
from gateway.workers import shared_directory


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


def run(settings: Settings) -> None:
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # a log line per request costs throughput
        log_config=None,  # gateway.logs configured the root logger
        timeout_graceful_shutdown=int(settings.drain_timeout) or None,
        server_header=False,
        proxy_headers=False,  # one ASGI layer less per request; nothing here reads client IPs
    )
    if settings.workers == 1:
        GatewayServer(uvicorn.Config(create_app(settings), **options)).run()
        return
    with shared_directory() as directory:
        # each worker process rebuilds the same Settings from the environment
        os.environ.update({**settings.to_environment(), WORKER_DIRECTORY_ENV: str(directory)})
        uvicorn.run(
            "gateway.app:app_from_environment", factory=True, workers=settings.workers, **options
        )
