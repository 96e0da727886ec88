"""The route table: every public path in one place."""

from __future__ import annotations

from starlette.routing import Route

from gateway.http import handlers

ROUTES = [
    Route("/v2", handlers.server_metadata, methods=["GET"]),
    Route("/v2/health/live", handlers.live, methods=["GET"]),
    Route("/v2/health/ready", handlers.ready, methods=["GET"]),
    Route("/v2/models/{model}", handlers.model_metadata, methods=["GET"]),
    Route("/v2/models/{model}/ready", handlers.model_ready, methods=["GET"]),
    Route("/v2/models/{model}/infer", handlers.infer_v2, methods=["POST"]),
    Route("/v2/models/{model}/versions/{version}", handlers.model_metadata, methods=["GET"]),
    Route("/v2/models/{model}/versions/{version}/ready", handlers.model_ready, methods=["GET"]),
    Route("/v2/models/{model}/versions/{version}/infer", handlers.infer_v2, methods=["POST"]),
    Route("/v1/models/{model}:predict", handlers.predict_v1, methods=["POST"]),
    Route("/v1/models/{model}/versions/{version}:predict", handlers.predict_v1, methods=["POST"]),
    Route("/v1/models/{model}", handlers.model_status_v1, methods=["GET"]),
    Route("/v1/models/{model}/versions/{version}", handlers.model_status_v1, methods=["GET"]),
    Route("/metrics", handlers.metrics, methods=["GET"]),
]
