"""The gRPC descriptor set the gateway loads is compiled from the .proto beside it, and
declares what tritonclient.grpc calls with the field numbers it uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2

from gateway.rpc import messages

RPC = Path(messages.__file__).parent


def test_the_descriptor_set_is_compiled_from_the_proto(tmp_path: Path) -> None:
    fresh = tmp_path / "inference.desc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{RPC}",
            f"--descriptor_set_out={fresh}",
            str(RPC / "inference.proto"),
        ],
        check=True,
    )
    compiled = descriptor_pb2.FileDescriptorSet.FromString(fresh.read_bytes())
    checked_in = descriptor_pb2.FileDescriptorSet.FromString(messages.DESCRIPTOR_SET.read_bytes())
    assert compiled == checked_in, "gateway/rpc/inference.desc is stale: run `make protos`"


def test_every_rpc_and_field_matches_the_protocol_tritonclient_speaks() -> None:
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for name, (request_type, response_type) in messages.methods().items():
        method = theirs.methods_by_name[name]
        for ours, their_type in (
            (request_type.DESCRIPTOR, method.input_type),
            (response_type.DESCRIPTOR, method.output_type),
        ):
            _same_fields(ours, their_type)


def _same_fields(ours: object, theirs: object) -> None:
    assert ours.name == theirs.name  # type: ignore[attr-defined]
    for field in ours.fields:  # type: ignore[attr-defined]
        match = theirs.fields_by_name[field.name]  # type: ignore[attr-defined]
        assert (field.number, field.type) == (match.number, match.type), field.full_name
        if field.message_type is not None and not field.message_type.GetOptions().map_entry:
            _same_fields(field.message_type, match.message_type)
