from __future__ import annotations

from http import HTTPStatus

from gateway import errors


def _subclasses(cls: type[errors.GatewayError]) -> list[type[errors.GatewayError]]:
    found: list[type[errors.GatewayError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def test_every_error_sets_its_own_status() -> None:
    statuses = {cls.__name__: cls.status for cls in _subclasses(errors.GatewayError)}
    assert statuses == {
        "InvalidRequest": HTTPStatus.BAD_REQUEST,
        "ModelNotFound": HTTPStatus.NOT_FOUND,
        "RequestTimeout": HTTPStatus.REQUEST_TIMEOUT,
        "PayloadTooLarge": HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "HeadersTooLarge": HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "QueueFull": HTTPStatus.TOO_MANY_REQUESTS,
        "ModelNotReady": HTTPStatus.SERVICE_UNAVAILABLE,
        "ControlUnavailable": HTTPStatus.SERVICE_UNAVAILABLE,
        "RolloutConflict": HTTPStatus.CONFLICT,
        "FeatureStoreUnavailable": HTTPStatus.SERVICE_UNAVAILABLE,
        "FeatureDataInvalid": HTTPStatus.BAD_GATEWAY,
        "DeadlineExceeded": HTTPStatus.GATEWAY_TIMEOUT,
        "InferenceFailed": HTTPStatus.INTERNAL_SERVER_ERROR,
    }
    for name in statuses:
        assert name in (errors.__doc__ or ""), f"{name} is missing from the tree in the docstring"
