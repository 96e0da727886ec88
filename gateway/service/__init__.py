"""The transport-agnostic request path: ``InferenceService`` admits a request as an
``InferenceCall``, which runs it and records it (see ``gateway.service.call``);
``ModelCatalog`` answers the health, metadata and repository endpoints."""

from gateway.service.call import InferenceCall, InferenceService, InferResult
from gateway.service.catalog import ModelCatalog

__all__ = ["InferResult", "InferenceCall", "InferenceService", "ModelCatalog"]
