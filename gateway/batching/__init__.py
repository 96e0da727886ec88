"""Dynamic batching: a pure asyncio core (no HTTP, no onnxruntime, no Prometheus)."""
