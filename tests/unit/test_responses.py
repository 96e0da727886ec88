"""The one mapping from a GatewayError to the wire, as both transports use it."""

from __future__ import annotations

import orjson

from gateway.errors import InvalidRequest, ModelNotReady, QueueFull, RequestTimeout
from gateway.http.responses import (
    error_parts,
    error_response,
    internal_error,
    internal_error_body,
)


def test_error_parts_status_body_and_headers() -> None:
    assert error_parts(InvalidRequest("bad input")) == (400, b'{"error":"bad input"}', [])
    assert error_parts(ModelNotReady("not yet"))[0] == 503
    assert error_parts(QueueFull("full", retry_after_s=3))[2] == [(b"retry-after", b"3")]
    assert error_parts(RequestTimeout("slow"))[2] == [(b"connection", b"close")]


def test_error_response_is_error_parts() -> None:
    for exc in (InvalidRequest("x"), QueueFull("full"), RequestTimeout("slow")):
        status, body, extra = error_parts(exc)
        response = error_response(exc)
        assert (response.status_code, response.body) == (status, body)
        assert all(pair in response.raw_headers for pair in extra)
        assert response.headers["content-type"] == "application/json"


def test_internal_error_names_the_request_id() -> None:
    message = orjson.loads(internal_error_body("r-1"))["error"]
    assert message == "internal error (request id r-1); the gateway log has details"
    assert internal_error(None).body == b'{"error":"internal error; the gateway log has details"}'
