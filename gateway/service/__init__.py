"""The transport-agnostic request path: ``InferenceService`` admits a request as an
``InferenceCall``, which runs it and records it (see ``gateway.service.call``)."""

from gateway.service.call import InferenceCall, InferenceService, InferResult

__all__ = ["InferResult", "InferenceCall", "InferenceService"]
