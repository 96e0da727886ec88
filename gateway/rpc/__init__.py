"""The Open Inference Protocol v2 over gRPC (SPEC 15): a second, thin transport over
the same service call as HTTP (``gateway.service``).

``inference.proto`` declares the protocol's messages and service; ``inference.desc``
is its compiled descriptor set (``make protos``), loaded into a private descriptor pool
(``messages``) so that the gateway's message classes never clash with another copy of
the same protocol in one process (tritonclient's, in the tests).
"""
