"""Promises to every caller about the others (SPEC section 10): what one client does on
its connection (slow, huge, silent, idle) and what happens to the repository (a version
retired, SIGTERM) never leaves a request of its own unanswered nor stalls anyone else.

Clients here are raw sockets, so a test can stop halfway through a request.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.config import Settings
from tests.conftest import EXAMPLES, RunningGateway, start_gateway, stop_gateway
from tests.gateway_process import serving
from tests.raw_http import closed_within, connect, post_head, read_response

pytestmark = pytest.mark.integration

DIGITS = orjson.dumps({"instances": [[0] * 64]})
PREDICT = "/v1/models/digits:predict"
QUICK_READ_TIMEOUT_S = 1.0
ADMIN_TOKEN = "hostile-http"


def _error(headers: dict[str, str], body: bytes) -> str:
    assert headers["content-type"] == "application/json"
    message = orjson.loads(body)["error"]
    assert isinstance(message, str)
    return message


@pytest.fixture(scope="module")
def quick(test_repository: Path) -> Iterator[RunningGateway]:
    """A gateway that gives clients 1 s to send their headers and body."""
    running = start_gateway(
        Settings(
            model_repository=test_repository,
            read_timeout=QUICK_READ_TIMEOUT_S,
            admin_token=ADMIN_TOKEN,
        )
    )
    yield running
    stop_gateway(running)


def test_a_slow_body_does_not_delay_other_callers(gateway: RunningGateway) -> None:
    """A request whose body is still arriving holds up no batch and no other caller of
    its model: while one sits half-sent, every request to the same model is answered
    promptly."""
    with connect(gateway.port) as slow:
        slow.sendall(post_head(PREDICT, 100_000) + b"{")
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for _ in range(200):
                started = time.monotonic()
                response = client.post(PREDICT, content=DIGITS)
                took = time.monotonic() - started
                assert response.status_code == 200
                assert took < 2.0, f"a request took {took:.1f} s beside a slow body"


def test_headers_over_the_limit_are_answered_431(gateway: RunningGateway) -> None:
    """Headers over --max-header-bytes (64 KiB by default) are answered 431 with a JSON
    error; headers under it are served."""
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        response = client.post(PREDICT, content=DIGITS, headers={"x-padding": "a" * 60_000})
        assert response.status_code == 200
    with connect(gateway.port) as sock:
        sock.sendall(post_head(PREDICT, len(DIGITS), b"x-padding: " + b"a" * 70_000 + b"\r\n"))
        status, headers, body = read_response(sock)
    assert status == 431
    assert "--max-header-bytes" in _error(headers, body)
    assert headers["connection"] == "close"


def test_endless_headers_are_cut_off_early(gateway: RunningGateway) -> None:
    """A client that keeps sending one header is stopped near the limit: the gateway does
    not buffer it (a 100 MiB header used to be accepted, and held in memory)."""
    chunk = b"a" * 65536
    sent = 0
    with connect(gateway.port) as sock:
        sock.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nx-padding: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
    assert sent < 64 * 1024 * 1024, "the gateway read 64 MiB of one header"
    assert httpx.get(f"{gateway.url}/v2/health/live", timeout=10).status_code == 200


def test_headers_not_finished_in_time_are_answered_408(quick: RunningGateway) -> None:
    """A client that does not finish its headers within --read-timeout is answered 408
    with a JSON error, and its connection closed."""
    with connect(quick.port) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nhost: 127.0.0.1\r\n".encode())
        started = time.monotonic()
        status, headers, body = read_response(sock)
        took = time.monotonic() - started
        assert status == 408
        assert "--read-timeout" in _error(headers, body)
        assert 0.5 < took < 8
        assert closed_within(sock, 5) < 5


def test_a_body_not_finished_in_time_is_answered_408(quick: RunningGateway) -> None:
    """A client that does not finish its body within --read-timeout is answered 408 with
    a JSON error saying how much arrived, and its connection closed."""
    with connect(quick.port) as sock:
        sock.sendall(post_head(PREDICT, 100) + b'{"instances"')
        started = time.monotonic()
        status, headers, body = read_response(sock)
        took = time.monotonic() - started
        assert status == 408
        message = _error(headers, body)
        assert "--read-timeout" in message and "received 12 of 100 bytes" in message
        assert 0.5 < took < 8
        assert closed_within(sock, 5) < 5


def test_an_admin_body_not_finished_in_time_is_answered_408(quick: RunningGateway) -> None:
    """The admin endpoints keep the same read timeout: a routing change whose body stops
    halfway is answered 408 with a JSON error, and its connection closed."""
    auth = f"authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
    with connect(quick.port) as sock:
        head = post_head("/admin/models/digits/routing", 100, auth).replace(b"POST", b"PUT", 1)
        sock.sendall(head + b'{"weights"')
        status, headers, body = read_response(sock)
        assert status == 408
        message = _error(headers, body)
        assert "--read-timeout" in message and "received 10 bytes" in message
        assert headers["connection"] == "close"
        assert closed_within(sock, 5) < 5


def test_a_connection_that_sends_nothing_is_dropped(quick: RunningGateway) -> None:
    """A connection that sends no request line within --read-timeout is closed without
    an answer (there is nothing to answer)."""
    with connect(quick.port) as sock:
        assert 0.5 < closed_within(sock, 8) < 8


def test_idle_keep_alive_connections_close_after_5_s(quick: RunningGateway) -> None:
    """After its response, a keep-alive connection left idle is closed after about 5 s
    (not after --read-timeout, and not never)."""
    with connect(quick.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        assert 3.0 < closed_within(sock, 15) < 15


def _single_version_repository(root: Path) -> Path:
    (root / "digits").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "digits" / "1", root / "digits" / "1")
    return root


def test_a_body_that_outlives_its_version_is_answered(tmp_path: Path) -> None:
    """A request whose version is retired (and its drain over) while the body arrives
    still gets an answer: served by the model's new version when no version was named,
    a JSON 404/503 when the retired version was named."""
    repository = _single_version_repository(tmp_path / "models")
    running = start_gateway(
        Settings(model_repository=repository, poll_interval=0.1, drain_timeout=0.3)
    )
    try:
        pinned_path = "/v1/models/digits/versions/1:predict"
        with connect(running.port) as unpinned, connect(running.port) as pinned:
            half = len(DIGITS) // 2
            unpinned.sendall(post_head(PREDICT, len(DIGITS)) + DIGITS[:half])
            pinned.sendall(post_head(pinned_path, len(DIGITS)) + DIGITS[:half])
            time.sleep(0.3)  # both requests are being read
            staged = tmp_path / "staged"
            shutil.copytree(EXAMPLES / "digits" / "2", staged)
            staged.rename(repository / "digits" / "2")  # "latest" now means version 2
            deadline = time.monotonic() + 30
            with httpx.Client(base_url=running.url, timeout=10) as client:
                while client.get("/v2/models/digits/versions/1/ready").status_code == 200:
                    assert time.monotonic() < deadline, "version 1 was never retired"
                    time.sleep(0.05)
            time.sleep(1.0)  # past the drain timeout: version 1 is released
            unpinned.sendall(DIGITS[half:])
            pinned.sendall(DIGITS[half:])
            status, headers, body = read_response(unpinned)
            assert status == 200, body
            assert headers["x-model-version"] == "2"
            assert len(orjson.loads(body)["predictions"]) == 1
            status, headers, body = read_response(pinned)
            assert status in (404, 503)
            assert "version" in _error(headers, body)
    finally:
        stop_gateway(running)


def test_sigterm_answers_a_request_whose_body_never_finishes(tmp_path: Path) -> None:
    """A client with an unfinished body when SIGTERM comes gets a JSON 503 once the drain
    timeout is over (not uvicorn's plain-text 500), and the gateway exits 0."""
    repository = _single_version_repository(tmp_path / "models")
    args = ["--model-repository", str(repository), "--drain-timeout", "1"]
    with serving(args, tmp_path / "gateway.log") as process:
        port = int(process.url.rsplit(":", 1)[1])
        with connect(port, timeout_s=20) as sock:
            sock.sendall(post_head(PREDICT, len(DIGITS)) + DIGITS[:10])
            time.sleep(0.3)
            process.process.send_signal(signal.SIGTERM)
            status, headers, body = read_response(sock)
        assert status == 503
        assert "shutting down" in _error(headers, body)
        assert process.process.wait(timeout=30) == 0
