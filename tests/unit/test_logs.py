"""Log lines: JSON objects with their extra fields as keys; the request line's fields."""

from __future__ import annotations

import logging
import os

import orjson
import pytest

from gateway.batching.ticket import Ticket
from gateway.logs import JsonFormatter
from gateway.service.request_log import log_request


class _Queue:
    def announce(self, count: int, wake: bool = True) -> None:
        pass


def _record(logger: str, message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_extra_fields_and_the_pid() -> None:
    line = JsonFormatter().format(_record("gateway.http", "it broke", request_id="r-1"))
    entry = orjson.loads(line)
    assert entry["level"] == "warning" and entry["logger"] == "gateway.http"
    assert entry["message"] == "it broke"
    assert entry["request_id"] == "r-1"
    assert entry["pid"] == os.getpid()
    assert "\n" not in line


def test_request_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.requests")
    ticket = Ticket(_Queue())
    ticket.queued_s, ticket.ran_s = 0.0012, 0.0005
    log_request(b"abc", "digits", "2", "v2", 200, 0.003, ticket)
    log_request(b"def", "nope", "", "v2", 404, 0.0001, None)
    served, missing = caplog.records
    assert served.levelno == logging.DEBUG
    assert (
        served.getMessage() == "v2 digits v2 abc 200 in 3.00 ms (queue 1.20 ms, inference 0.50 ms)"
    )
    fields = orjson.loads(JsonFormatter().format(served))
    assert fields["request_id"] == "abc" and fields["status"] == 200
    assert (fields["duration_ms"], fields["queue_ms"], fields["inference_ms"]) == (3.0, 1.2, 0.5)
    assert orjson.loads(JsonFormatter().format(missing))["queue_ms"] is None
    assert "nope v- def 404" in missing.getMessage()


def test_request_line_counts_rows_by_feature_source(caplog: pytest.LogCaptureFixture) -> None:
    """A request that sent entity ids says how many rows got their features from the
    store and how many the [features] defaults; other requests carry null fields."""
    caplog.set_level(logging.DEBUG, logger="gateway.requests")
    log_request(b"f-1", "fraud", "1", "v2", 200, 0.002, None, (3, 2))
    log_request(b"f-2", "fraud", "1", "v2", 200, 0.002, None)
    by_ids, by_features = caplog.records
    assert by_ids.getMessage().endswith("; features: 3 from the store, 2 defaults")
    fields = orjson.loads(JsonFormatter().format(by_ids))
    assert (fields["features_store"], fields["features_default"]) == (3, 2)
    assert "features" not in by_features.getMessage()
    fields = orjson.loads(JsonFormatter().format(by_features))
    assert fields["features_store"] is None and fields["features_default"] is None
