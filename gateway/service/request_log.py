"""The per-request log line (logger ``gateway.requests``, debug level)."""

from __future__ import annotations

import logging

from gateway.batching.ticket import Ticket

request_log = logging.getLogger("gateway.requests")


def log_request(
    request_id: bytes,
    model: str,
    version: str,
    protocol: str,
    status: int,
    seconds: float,
    ticket: Ticket | None,
    features: tuple[int, int] | None = None,
) -> None:
    """One line per request (debug level): with --log-format json, every field a key.
    ``features``: for a request that sent entity ids, its rows whose features came from
    the store (or its local cache) and those that got the [features] defaults."""
    queued = None if ticket is None or ticket.queued_s is None else ticket.queued_s * 1000
    ran = None if ticket is None or ticket.ran_s is None else ticket.ran_s * 1000
    rid = request_id.decode("latin-1")
    stored, defaulted = (None, None) if features is None else features
    request_log.debug(
        "%s %s v%s %s %d in %.2f ms (queue %s ms, inference %s ms)%s",
        protocol,
        model,
        version or "-",
        rid,
        status,
        seconds * 1000,
        "-" if queued is None else f"{queued:.2f}",
        "-" if ran is None else f"{ran:.2f}",
        "" if features is None else f"; features: {stored} from the store, {defaulted} defaults",
        extra={
            "request_id": rid,
            "model": model,
            "version": version,
            "protocol": protocol,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "queue_ms": None if queued is None else round(queued, 3),
            "inference_ms": None if ran is None else round(ran, 3),
            "features_store": stored,
            "features_default": defaulted,
        },
    )
