"""The floor for gRPC: grpcio's asyncio server on uvloop, the gateway's stack, with one
ModelInfer handler that parses the request and answers a fixed ModelInferResponse of
the model's output size, with no inference and no gateway code at all.

    python loadtests/grpc_floor.py PORT OUTPUT_BYTES

What a request costs here is what grpcio itself costs on this core: the gateway's gRPC
transport cannot be cheaper. ``protocols.py`` drives it beside the gateway.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import uvloop

from gateway.rpc.messages import SERVICE, ModelInferRequest, ModelInferResponse


async def serve(port: int, output_bytes: int) -> None:
    reply = ModelInferResponse(model_name="floor", model_version="1")
    reply.outputs.add(name="output", datatype="FP32", shape=[1, output_bytes // 4])
    reply.raw_output_contents.append(bytes(output_bytes))
    answer = reply.SerializeToString()

    async def infer(request: Any, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        infer, request_deserializer=ModelInferRequest.FromString, response_serializer=None
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("output_bytes", type=int, help="size of the fixed output tensor")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.output_bytes))


if __name__ == "__main__":
    main()
