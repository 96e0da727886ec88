"""`gateway serve` as a user runs it, for tests: a real process on a free port, its
output in a log file, killed on the way out if a test left it running."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gateway exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")


@contextlib.contextmanager
def serving(
    args: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[GatewayProcess]:
    """`python -m gateway serve ARGS` (or ``command`` ARGS), ready; its port comes through
    GATEWAY_PORT. Its environment: this one without GATEWAY_* variables, plus ``env``."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    environment = {**inherited, **(env or {}), "GATEWAY_PORT": str(port)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "gateway", "serve"]), *args],
            cwd=cwd,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        yield GatewayProcess(process, url, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
