"""The baseline: Starlette, one ``session.run`` per request on the event loop, no batching.

What a team writes on its first day; the gateway must beat it. Same wire format as the
gateway's v2 JSON (one FP32 input, one output), same uvicorn settings.

    python -m loadtests.naive_server REPOSITORY --port 8100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loadtests.floor_server import serve


def build_app(repository: Path) -> Starlette:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = {
        path.parent.parent.name: ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        for path in sorted(repository.glob("*/1/model.onnx"))
    }

    async def infer(request: Request) -> Response:
        name = request.path_params["model"]
        session = sessions[name]
        doc = orjson.loads(await request.body())
        tensor = doc["inputs"][0]
        array = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        (output,) = session.run(None, {session.get_inputs()[0].name: array})
        body = {
            "model_name": name,
            "outputs": [
                {
                    "name": "output",
                    "datatype": "FP32",
                    "shape": list(output.shape),
                    "data": output.ravel(),
                }
            ],
        }
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repository", type=Path)
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    serve(build_app(args.repository), args.port)


if __name__ == "__main__":
    main()
