"""Wire formats: Open Inference Protocol v2 (JSON and binary) and TF-Serving v1 JSON.

Pure numpy + orjson, so load tests and clients can import it without the server.
"""
