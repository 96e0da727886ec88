"""The floor: what the gateway's HTTP stack costs before it does anything of its own.

A bare ASGI app on the gateway's server stack (uvicorn, uvloop, httptools; ``serve``,
which naive_server.py uses too) that reads a v2 request's body, parses it with orjson
and answers a fixed v2 JSON answer of the model's output size: no routing, no numpy,
no batching, no inference, no metrics: uvicorn's ASGI path and nothing else.
``benchmark.py`` reports the gateway's req/s as a share of it (the gateway's inference
paths skip ASGI, gateway/http/exchange.py, so its HTTP part costs less than this).

    python -m loadtests.floor_server --port 8100
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson
import uvicorn

from loadtests.reference_models import SHAPES

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_BODY = 16 << 20


def fixed_answers() -> dict[str, bytes]:
    """For each reference model, a v2 answer with one row of its output: random floats,
    so the body is as long as the gateway's."""
    rng = np.random.default_rng(2)
    answers = {}
    for model, (_, layers, _) in SHAPES.items():
        width = layers[-1]
        body = {
            "model_name": model,
            "model_version": "1",
            "outputs": [
                {
                    "name": "output",
                    "datatype": "FP32",
                    "shape": [1, width],
                    "data": rng.random(width, dtype=np.float32).tolist(),
                }
            ],
        }
        answers[f"/v2/models/{model}/infer"] = orjson.dumps(body)
    return answers


def _headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]


class FloorApp:
    def __init__(self) -> None:
        self.answers = fixed_answers()
        self.headers = {body: _headers(body) for body in self.answers.values()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start or stop
        answer = self.answers.get(scope["path"])
        if scope["method"] == "GET" and scope["path"] == "/v2/health/ready":
            answer = b'{"ready":true}'
        elif answer is not None:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY:
                    answer = None
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            else:
                try:
                    orjson.loads(b"".join(chunks))  # parsed, as the gateway must
                except orjson.JSONDecodeError:
                    answer = None
        status = 200 if answer is not None else 400
        body = answer if answer is not None else b'{"error":"not a v2 request"}'
        headers = self.headers.get(body) or _headers(body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def serve(app: Any, port: int) -> None:
    """Serve ``app`` on 127.0.0.1 with the gateway's server stack and no access log: the
    options every reference server of the benchmark runs under."""
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    serve(FloorApp(), parser.parse_args().port)


if __name__ == "__main__":
    main()
