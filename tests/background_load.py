"""Bounded background traffic and polling for tests that change a gateway while requests flow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import httpx

T = TypeVar("T")


class BackgroundLoad(Generic[T]):
    """``clients`` threads, each calling ``send`` with its own keep-alive client until the
    ``with`` block ends, ``seconds`` pass or it has sent ``max_requests``; ``results``
    holds what ``send`` returned, from every thread."""

    def __init__(
        self,
        url: str,
        send: Callable[[httpx.Client], T],
        clients: int = 3,
        seconds: float = 30.0,
        max_requests: int = 5000,
    ) -> None:
        self.results: list[T] = []
        self._send = send
        self._seconds = seconds
        self._max_requests = max_requests
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(url,)) for _ in range(clients)]

    def _client(self, url: str) -> None:
        deadline = time.monotonic() + self._seconds
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(self._max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                self.results.append(self._send(client))

    def __enter__(self) -> BackgroundLoad[T]:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._seconds + 10)


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``predicate`` every 50 ms until it holds; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
