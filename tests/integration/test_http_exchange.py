"""The inference paths' own HTTP exchange (gateway.http.exchange), over raw sockets: it
answers as uvicorn's ASGI path does, on every way a request can arrive (pipelined,
HTTP/1.0, in pieces, chunked, Expect: 100-continue), and the requests it leaves to
the ASGI path (a query string, an escaped path) get the same answer."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.conftest import RunningGateway
from tests.raw_http import ResponseReader, closed_within, connect, post_head

pytestmark = pytest.mark.integration

ROW = [float(i % 7) for i in range(64)]
BODY = orjson.dumps(
    {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ROW}]}
)
PATH = "/v2/models/digits/infer"


def _request(path: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return post_head(path, len(body), extra, version) + body


@pytest.fixture(scope="module")
def expected(gateway: RunningGateway) -> dict[str, object]:
    """The answer's outputs as httpx gets them."""
    response = httpx.post(gateway.url + PATH, content=BODY, timeout=30)
    assert response.status_code == 200
    return {"outputs": response.json()["outputs"], "version": response.headers["x-model-version"]}


def _outputs(body: bytes) -> object:
    return orjson.loads(body)["outputs"]


def test_the_answer_carries_the_headers_of_every_other_endpoint(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(_request(PATH, BODY, b"x-request-id: mine-1\r\n"))
        status, headers, body = ResponseReader(sock).response()
    assert status == 200
    assert headers["x-request-id"] == "mine-1"
    assert headers["x-model-version"] == expected["version"]
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert "date" in headers  # uvicorn's default header, as on the admin endpoints
    assert "connection" not in headers  # kept alive
    assert _outputs(body) == expected["outputs"]


def test_pipelined_requests_are_answered_in_order_on_one_connection(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    requests = [_request(PATH, BODY, b"x-request-id: pipe-%d\r\n" % i) for i in range(5)]
    with connect(gateway.port) as sock:
        sock.sendall(b"".join(requests))  # all five before reading any answer
        reader = ResponseReader(sock)
        answers = [reader.response() for _ in requests]
        sock.sendall(_request(PATH, BODY, b"x-request-id: after\r\n"))
        last = reader.response()
    assert [headers["x-request-id"] for _, headers, _ in answers] == [f"pipe-{i}" for i in range(5)]
    assert all(
        status == 200 and _outputs(body) == expected["outputs"] for status, _, body in answers
    )
    assert last[0] == 200 and last[1]["x-request-id"] == "after"


def test_an_http_1_0_request_is_answered_and_the_connection_closed(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(_request(PATH, BODY, version=b"1.0"))
        reader = ResponseReader(sock)
        status, headers, body = reader.response()
        assert sock.recv(1024) == b""  # closed after the answer
    assert status == 200 and headers["connection"] == "close"
    assert _outputs(body) == expected["outputs"]


def test_connection_close_from_the_caller_is_honoured(gateway: RunningGateway) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(_request(PATH, BODY, b"connection: close\r\n"))
        status, headers, _ = ResponseReader(sock).response()
        assert sock.recv(1024) == b""
    assert status == 200 and headers["connection"] == "close"


def test_a_body_sent_in_pieces_is_read_whole(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    request = _request(PATH, BODY)
    head_end = request.index(b"\r\n\r\n") + 4
    with connect(gateway.port) as sock:
        sock.sendall(request[:head_end])  # the handler starts with no body at all
        for start in range(head_end, len(request), 97):
            time.sleep(0.01)
            sock.sendall(request[start : start + 97])
        status, _, body = ResponseReader(sock).response()
    assert status == 200 and _outputs(body) == expected["outputs"]


def test_a_chunked_body_is_read_whole(gateway: RunningGateway, expected: dict[str, object]) -> None:
    chunks = [BODY[i : i + 100] for i in range(0, len(BODY), 100)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n" % PATH.encode()
    )
    with connect(gateway.port) as sock:
        sock.sendall(head + encoded)
        status, _, body = ResponseReader(sock).response()
    assert status == 200 and _outputs(body) == expected["outputs"]


def test_expect_100_continue_is_served(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    request = _request(PATH, BODY, b"expect: 100-continue\r\n")
    head_end = request.index(b"\r\n\r\n") + 4
    with connect(gateway.port) as sock:
        sock.sendall(request[:head_end])
        reader = ResponseReader(sock)
        interim, _, _ = reader.response()
        sock.sendall(request[head_end:])
        status, _, body = reader.response()
    assert interim == 100
    assert status == 200 and _outputs(body) == expected["outputs"]


@pytest.mark.parametrize(
    "path",
    [PATH + "?trace=1", "/v2/models/dig%69ts/infer", "/v2/models/digits/versions/2/infer"],
    ids=["query string", "escaped path", "version named"],
)
def test_paths_the_exchange_leaves_to_asgi_get_the_same_answer(
    gateway: RunningGateway, expected: dict[str, object], path: str
) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(_request(path, BODY, b"x-request-id: asgi\r\n"))
        status, headers, body = ResponseReader(sock).response()
    assert status == 200 and headers["x-request-id"] == "asgi"
    assert headers["x-model-version"] == "2"
    assert _outputs(body) == expected["outputs"]


def test_an_error_answer_keeps_the_connection_usable(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        sock.sendall(_request(PATH, b'{"inputs": 3}'))
        status, headers, body = reader.response()
        assert status == 400 and "connection" not in headers
        assert "'inputs' must be a non-empty list" in orjson.loads(body)["error"]
        sock.sendall(_request(PATH, BODY))
        status, _, body = reader.response()
    assert status == 200 and _outputs(body) == expected["outputs"]


def test_a_caller_that_leaves_mid_body_costs_nothing_to_the_next(
    gateway: RunningGateway, expected: dict[str, object]
) -> None:
    for _ in range(20):
        with connect(gateway.port) as sock:
            request = _request(PATH, BODY)
            sock.sendall(request[: len(request) // 2])
    response = httpx.post(gateway.url + PATH, content=BODY, timeout=30)
    assert response.status_code == 200 and response.json()["outputs"] == expected["outputs"]


def test_a_connection_idle_after_its_answers_closes_after_the_keep_alive_5_s(
    gateway: RunningGateway,
) -> None:
    """The keep-alive timeout (5 s), not --read-timeout (30 s here), closes a connection
    left idle after answers from the inference path."""
    with connect(gateway.port) as sock:
        reader = ResponseReader(sock)
        for _ in range(3):
            sock.sendall(_request(PATH, BODY))
            assert reader.response()[0] == 200
        took = closed_within(sock, 25)
    assert 4.0 < took < 9.0
