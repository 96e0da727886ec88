"""The route table: every public path in one place."""

from __future__ import annotations

from starlette.routing import Route

from gateway.http import admin, handlers
from gateway.http.inference import INFER_V2, PREDICT_V1

ROUTES = [
    Route("/v2", handlers.server_metadata, methods=["GET"]),
    Route("/v2/health/live", handlers.live, methods=["GET"]),
    Route("/v2/health/ready", handlers.ready, methods=["GET"]),
    Route("/v2/models/{model}", handlers.model_metadata, methods=["GET"]),
    Route("/v2/models/{model}/ready", handlers.model_ready, methods=["GET"]),
    Route("/v2/models/{model}/infer", INFER_V2, methods=["POST"]),
    Route("/v2/models/{model}/versions/{version}", handlers.model_metadata, methods=["GET"]),
    Route("/v2/models/{model}/versions/{version}/ready", handlers.model_ready, methods=["GET"]),
    Route("/v2/models/{model}/versions/{version}/infer", INFER_V2, methods=["POST"]),
    Route("/v1/models/{model}:predict", PREDICT_V1, methods=["POST"]),
    Route("/v1/models/{model}/versions/{version}:predict", PREDICT_V1, methods=["POST"]),
    Route("/v1/models/{model}", handlers.model_status_v1, methods=["GET"]),
    Route("/v1/models/{model}/versions/{version}", handlers.model_status_v1, methods=["GET"]),
    Route("/metrics", handlers.metrics, methods=["GET"]),
    Route("/v2/repository/index", admin.repository_index, methods=["POST"]),
    Route("/v2/repository/models/{model}/load", admin.load_model, methods=["POST"]),
    Route("/v2/repository/models/{model}/unload", admin.unload_model, methods=["POST"]),
    Route("/admin/models/{model}/routing", admin.get_routing, methods=["GET"]),
    Route("/admin/models/{model}/routing", admin.put_routing, methods=["PUT"]),
    Route("/admin/models/{model}/routing", admin.delete_routing, methods=["DELETE"]),
    Route("/admin/models/{model}/drift", admin.drift, methods=["GET"]),
    Route("/admin/models/{model}/rollout", admin.start_rollout, methods=["POST"]),
    Route("/admin/models/{model}/rollout", admin.rollout, methods=["GET"]),
    Route("/admin/models/{model}/rollout", admin.abort_rollout, methods=["DELETE"]),
    Route("/admin/state", admin.control_state, methods=["GET"]),
]
