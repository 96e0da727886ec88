"""Locust scenarios for the gateway: one user class per endpoint and scenario.

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host http://127.0.0.1:8000 \
        --csv loadtests/results/locust --html loadtests/results/locust.html

Classes (run a subset by naming them after the options, or by tag with ``-T``):

- ``V2JsonUser`` (tag ``v2-json``): digits, v2 infer with JSON tensors;
- ``V2BinaryUser`` (tag ``v2-binary``): digits, v2 infer with Triton's binary tensors;
- ``V1PredictUser`` (tag ``v1``): digits, TF-Serving ``:predict`` rows;
- ``FeatureUser`` (tag ``features``): fraud by entity id only (features looked up);
- ``StickyABUser`` (tag ``ab``): each simulated user sends its own id in the sticky
  header; a reply from another version than the user's first is a failure;
- ``DriftUser`` (tag ``drift``): fraud by feature vector, the users of the entities
  file, with one field scaled up more and more over the run: drift monitoring's
  PSI for that column rises (``/admin/models/fraud/drift``, ``gateway_drift_psi``);
- ``GrpcUser`` (tag ``grpc``): digits over gRPC (``--grpc-port``), ModelInfer with
  ``raw_input_contents``; reported as request type ``grpc``.

Options: ``--entities-file`` (ids for FeatureUser, default models/fraud/entities.csv),
``--ab-model`` (default digits), ``--sticky-header`` (default x-user-id; the model's
``[routing] sticky_key``), ``--drift-field`` (default balance), ``--drift-factor``
(default 3: the field's final scale), ``--drift-ramp-s`` (default 60: seconds to
reach it) and ``--grpc-target`` (default: the ``--host``'s name, port 8001). Images and
ids are drawn with a fixed seed per user.
"""

from __future__ import annotations

import csv
import itertools
import random
import struct
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import grpc.experimental.gevent as grpc_gevent
import orjson
from locust import FastHttpUser, User, between, events, tag, task

from gateway.rpc.messages import ModelInferRequest, ModelInferResponse

# grpcio's own threads would block locust's gevent loop: let it use gevent instead
grpc_gevent.init_gevent()

ROOT = Path(__file__).resolve().parent.parent
PIXELS = 64
_user_numbers = itertools.count(1)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--entities-file",
        default=str(ROOT / "models" / "fraud" / "entities.csv"),
        help="CSV whose first column holds the entity ids for FeatureUser",
    )
    parser.add_argument("--ab-model", default="digits", help="model for StickyABUser")
    parser.add_argument(
        "--sticky-header", default="x-user-id", help="the model's [routing] sticky_key header"
    )
    parser.add_argument("--drift-field", default="balance", help="the field DriftUser scales")
    parser.add_argument("--drift-factor", type=float, default=3.0, help="its final scale")
    parser.add_argument(
        "--drift-ramp-s", type=float, default=60.0, help="seconds until it reaches it"
    )
    parser.add_argument(
        "--grpc-target",
        default="",
        help="host:port of the gateway's gRPC server for GrpcUser (default: --host's, port 8001)",
    )


@events.init.add_listener
def _only_tagged_users(environment: Any, **_: Any) -> None:
    """With ``-T TAG``, keep only the user classes that have a task with that tag (Locust
    itself would still start the others, with no task to run)."""
    wanted = set(getattr(environment.parsed_options, "tags", None) or ())
    if wanted:
        environment.user_classes[:] = [
            user
            for user in environment.user_classes
            if any(getattr(t, "locust_tag_set", set()) & wanted for t in user.tasks)
        ]


def _image(rng: random.Random) -> list[int]:
    return [rng.randrange(17) for _ in range(PIXELS)]


def _v2_json(image: list[int]) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, PIXELS], "datatype": "FP32", "data": image}]}
    )


def _v2_binary(image: list[int]) -> tuple[bytes, str]:
    """JSON header, then the tensor as little-endian FP32; and the header's length."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, PIXELS],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": PIXELS * 4},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return header + struct.pack(f"<{PIXELS}f", *image), str(len(header))


def _check(response: Any, what: str) -> bool:
    if response.status_code != 200:
        response.failure(f"{what}: HTTP {response.status_code}: {response.text[:200]}")
        return False
    return True


class _GatewayUser(FastHttpUser):
    abstract = True
    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        self.rng = random.Random(self.number)


class V2JsonUser(_GatewayUser):
    @tag("v2-json")
    @task
    def infer(self) -> None:
        body = _v2_json(_image(self.rng))
        with self.client.post(
            "/v2/models/digits/infer", data=body, name="v2 json digits", catch_response=True
        ) as response:
            if _check(response, "v2 json"):
                outputs = response.json()["outputs"]
                if outputs[0]["shape"] != [1, 10]:
                    response.failure(f"unexpected output shape {outputs[0]['shape']}")


class V2BinaryUser(_GatewayUser):
    @tag("v2-binary")
    @task
    def infer(self) -> None:
        body, length = _v2_binary(_image(self.rng))
        headers = {
            "Inference-Header-Content-Length": length,
            "Content-Type": "application/octet-stream",
        }
        with self.client.post(
            "/v2/models/digits/infer",
            data=body,
            headers=headers,
            name="v2 binary digits",
            catch_response=True,
        ) as response:
            if _check(response, "v2 binary") and "Inference-Header-Content-Length" not in (
                response.headers
            ):
                response.failure("binary outputs were asked for, but the reply has no header")


class V1PredictUser(_GatewayUser):
    @tag("v1")
    @task
    def predict(self) -> None:
        body = orjson.dumps({"instances": [_image(self.rng)]})
        with self.client.post(
            "/v1/models/digits:predict", data=body, name="v1 predict digits", catch_response=True
        ) as response:
            if _check(response, "v1 predict") and len(response.json()["predictions"]) != 1:
                response.failure("expected one prediction")


class FeatureUser(_GatewayUser):
    """Sends only user ids; the gateway looks the features up ([features] of fraud)."""

    _ids: list[str] = []

    def on_start(self) -> None:
        super().on_start()
        if not FeatureUser._ids:
            path = Path(self.environment.parsed_options.entities_file)
            with path.open(newline="", encoding="utf-8") as handle:
                rows = csv.reader(handle)
                next(rows, None)
                FeatureUser._ids = [row[0] for row in rows if row]

    @tag("features")
    @task
    def infer_by_id(self) -> None:
        ids = [self.rng.choice(self._ids) for _ in range(self.rng.randint(1, 4))]
        body = orjson.dumps(
            {"inputs": [{"name": "user_id", "datatype": "BYTES", "shape": [len(ids)], "data": ids}]}
        )
        with self.client.post(
            "/v2/models/fraud/infer", data=body, name="v2 fraud by user id", catch_response=True
        ) as response:
            if _check(response, "features"):
                shape = response.json()["outputs"][0]["shape"]
                if shape[0] != len(ids):
                    response.failure(f"{len(ids)} ids, but {shape[0]} rows came back")


class StickyABUser(_GatewayUser):
    """One caller of an A/B-routed model: its id must keep it on one version."""

    def on_start(self) -> None:
        super().on_start()
        self.version: str | None = None

    @tag("ab")
    @task
    def infer_as_myself(self) -> None:
        options = self.environment.parsed_options
        headers = {options.sticky_header: f"user-{self.number}"}
        with self.client.post(
            f"/v2/models/{options.ab_model}/infer",
            data=_v2_json(_image(self.rng)),
            headers=headers,
            name="v2 sticky a/b",
            catch_response=True,
        ) as response:
            if not _check(response, "sticky a/b"):
                return
            version = response.headers.get("x-model-version")
            if self.version is None:
                self.version = version
            elif version != self.version:
                response.failure(f"user-{self.number} moved from v{self.version} to v{version}")


FRAUD_FIELDS = ["age", "account_age_days", "balance", "txn_count_7d", "avg_txn_amount"]
FRAUD_FIELDS += ["chargebacks_90d"]


class DriftUser(_GatewayUser):
    """The fraud model's own population, with one field drifting: its scale goes from 1
    to ``--drift-factor`` over ``--drift-ramp-s`` seconds, then stays there."""

    _rows: list[list[float]] = []

    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        if not DriftUser._rows:
            with Path(options.entities_file).open(newline="", encoding="utf-8") as handle:
                DriftUser._rows = [
                    [float(row[f]) for f in FRAUD_FIELDS] for row in csv.DictReader(handle)
                ]
        self.column = FRAUD_FIELDS.index(options.drift_field)
        self.started = time.monotonic()

    @tag("drift")
    @task
    def infer_drifting(self) -> None:
        options = self.environment.parsed_options
        progress = min((time.monotonic() - self.started) / options.drift_ramp_s, 1.0)
        scale = 1.0 + progress * (options.drift_factor - 1.0)
        rows = [list(self.rng.choice(self._rows)) for _ in range(8)]
        for row in rows:
            row[self.column] *= scale
        body = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "features",
                        "datatype": "FP32",
                        "shape": [len(rows), len(FRAUD_FIELDS)],
                        "data": [value for row in rows for value in row],
                    }
                ]
            }
        )
        with self.client.post(
            "/v2/models/fraud/infer", data=body, name="v2 fraud drifting", catch_response=True
        ) as response:
            _check(response, "drift")


INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


class GrpcUser(User):
    """digits over gRPC: one channel per simulated user, as one tritonclient.grpc client
    has; each call is reported to locust as request type ``grpc``."""

    wait_time = between(0.0, 0.01)

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        self.rng = random.Random(self.number)
        options = self.environment.parsed_options
        target = options.grpc_target or f"{urlsplit(self.host or '').hostname}:8001"
        self.channel = grpc.insecure_channel(target)
        self.infer = self.channel.unary_unary(
            INFER_METHOD,
            request_serializer=None,
            response_deserializer=ModelInferResponse.FromString,
        )

    def on_stop(self) -> None:
        self.channel.close()

    @tag("grpc")
    @task
    def infer_digits(self) -> None:
        request = ModelInferRequest(model_name="digits")
        request.inputs.add(name="pixels", datatype="FP32", shape=[1, PIXELS])
        request.raw_input_contents.append(struct.pack(f"<{PIXELS}f", *_image(self.rng)))
        body = request.SerializeToString()
        failure: Exception | None = None
        size = 0
        started = time.perf_counter()
        try:
            response = self.infer(body, timeout=10)
            size = response.ByteSize()
            if list(response.outputs[0].shape) != [1, 10]:
                failure = ValueError(f"unexpected output shape {list(response.outputs[0].shape)}")
        except grpc.RpcError as exc:
            failure = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name="grpc digits",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=failure,
            context={},
        )
