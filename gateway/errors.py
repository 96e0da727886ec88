"""Every error the gateway raises on purpose, with the HTTP status it maps to.

The tree::

    GatewayError (500)
    ├── InvalidRequest (400)         malformed body, unknown/missing input, wrong
    │                                datatype, shape or element count
    ├── ModelNotFound (404)          unknown model, or a version it does not have
    ├── RequestTimeout (408)         headers or body not received within --read-timeout
    ├── PayloadTooLarge (413)        body over --max-body-bytes
    ├── HeadersTooLarge (431)        request headers over --max-header-bytes
    ├── RolloutConflict (409)        a rollout for a model that has one running
    ├── QueueFull (429)              a model's queue is full; carries retry_after_s
    ├── ModelNotReady (503)          the model has no loaded version
    │   └── FeatureStoreUnavailable  Redis down or slow, and [features]
    │                                on_redis_error = "error"
    ├── ControlUnavailable (503)     the control state (--control-url) does not answer:
    │                                runtime changes wait, serving goes on
    ├── FeatureDataInvalid (502)     one entity in the store cannot be read (wrong type,
    │                                not a number); never reaches a caller: that entity
    │                                counts as missing
    ├── DeadlineExceeded (504)       a request waited past its deadline
    └── InferenceFailed (500)        the runtime rejected or failed a run

This module imports no web framework: ``gateway.http.responses.error_parts`` is the
single place that turns these into responses (status, body, headers).
"""

from __future__ import annotations

from http import HTTPStatus


class GatewayError(Exception):
    """Base class; ``message`` is what the caller reads, so it must say what to fix."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GatewayError):
    status = HTTPStatus.BAD_REQUEST


class ModelNotFound(GatewayError):
    status = HTTPStatus.NOT_FOUND


class RequestTimeout(GatewayError):
    status = HTTPStatus.REQUEST_TIMEOUT


class PayloadTooLarge(GatewayError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class HeadersTooLarge(GatewayError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class RolloutConflict(GatewayError):
    status = HTTPStatus.CONFLICT


class QueueFull(GatewayError):
    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelNotReady(GatewayError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


class FeatureStoreUnavailable(ModelNotReady):
    pass


class ControlUnavailable(GatewayError):
    """The control state (SPEC 11) cannot be read or written, e.g. its Redis is down:
    serving goes on with what was applied last; runtime changes wait until it is back."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class FeatureDataInvalid(GatewayError):
    status = HTTPStatus.BAD_GATEWAY


class DeadlineExceeded(GatewayError):
    status = HTTPStatus.GATEWAY_TIMEOUT


class InferenceFailed(GatewayError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR


class ClientGone(Exception):
    """The caller disconnected before its request ran; nobody is left to answer."""


class ConfigError(Exception):
    """A model repository or model.toml problem; never reaches a caller as a status."""
