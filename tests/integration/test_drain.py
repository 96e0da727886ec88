"""SIGTERM under load, against `gateway serve` as a real process: every request the
gateway accepted is answered 200, the process exits 0, and the shadow log is complete.

"Accepted" is what the gateway's own per-request log (debug level, JSON) records: a
request it never read (its connection refused or closed while idle, as the listener
shuts) is refused, not failed; the client sees a transport error for it, and its
request id must then be absent from that log.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from tests import onnx_models
from tests.conftest import EXAMPLES
from tests.gateway_process import serving

pytestmark = pytest.mark.integration

DIGITS = orjson.dumps({"instances": [[0] * 64]})
SLOW = orjson.dumps(
    {
        "inputs": [
            {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "b", "shape": [1, 4], "datatype": "INT64", "data": [1, 1, 1, 1]},
        ]
    }
)
CLIENTS = 12
LOAD_BEFORE_SIGNAL_S = 1.5
LOAD_AFTER_SIGNAL_S = 1.0
MAX_REQUESTS_PER_CLIENT = 2000


@dataclass
class Outcomes:
    answered: dict[str, int] = field(default_factory=dict)  # request id -> status
    answered_at: dict[str, float] = field(default_factory=dict)
    transport_errors: dict[str, str] = field(default_factory=dict)  # request id -> error
    lock: threading.Lock = field(default_factory=threading.Lock)


def _repository(root: Path) -> Path:
    shutil.copytree(EXAMPLES / "digits", root / "digits")
    onnx_models.write_config(
        root,
        "digits",
        '[model]\nversions = "all"\n[routing]\nweights = { "1" = 1 }\n'
        "[routing.shadow]\nversion = 2\n",
    )
    # slow enough that requests are queued and running when the signal comes
    onnx_models.write_slow_sum_model(root)
    return root


def _client_loop(
    url: str, index: int, stop: threading.Event, outcomes: Outcomes, deadline: float
) -> None:
    path, body = (
        ("/v1/models/digits:predict", DIGITS) if index % 2 else ("/v2/models/slowsum/infer", SLOW)
    )
    with httpx.Client(base_url=url, timeout=60) as client:
        for n in range(MAX_REQUESTS_PER_CLIENT):
            if stop.is_set() or time.monotonic() > deadline:
                return
            request_id = f"c{index}-{n}"
            try:
                response = client.post(
                    path,
                    content=body,
                    headers={"x-request-id": request_id, "content-type": "application/json"},
                )
            except httpx.TransportError as exc:
                with outcomes.lock:
                    outcomes.transport_errors[request_id] = type(exc).__name__
                time.sleep(0.02)  # the listener is closed: nothing to hammer
                continue
            with outcomes.lock:
                outcomes.answered[request_id] = response.status_code
                outcomes.answered_at[request_id] = time.monotonic()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_fails_no_accepted_request(workers: int, tmp_path: Path) -> None:
    repository = _repository(tmp_path / "models")
    shadow_log = tmp_path / "shadow.jsonl"
    log_path = tmp_path / "gateway.log"
    args = ["--model-repository", str(repository), "--workers", str(workers)]
    args += ["--shadow-log", str(shadow_log), "--log-level", "debug", "--log-format", "json"]
    args += ["--drain-timeout", "30"]
    outcomes = Outcomes()
    stop = threading.Event()
    # TMPDIR: where the workers' shared directory goes
    with serving(args, log_path, env={"TMPDIR": str(tmp_path)}) as gateway:
        try:
            deadline = time.monotonic() + 60
            clients = [
                threading.Thread(
                    target=_client_loop, args=(gateway.url, i, stop, outcomes, deadline)
                )
                for i in range(CLIENTS)
            ]
            for thread in clients:
                thread.start()
            time.sleep(LOAD_BEFORE_SIGNAL_S)
            signalled_at = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            time.sleep(LOAD_AFTER_SIGNAL_S)
            returncode = gateway.process.wait(timeout=60)
            stop.set()
            for thread in clients:
                thread.join(timeout=60)
        finally:
            stop.set()

    lines = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.strip()]
    handled = {
        line["request_id"]: line["status"] for line in lines if line["logger"] == "gateway.requests"
    }
    answered_after_signal = sum(1 for t in outcomes.answered_at.values() if t > signalled_at)
    print(
        f"\nworkers={workers}: {len(outcomes.answered)} answered "
        f"({answered_after_signal} of them after SIGTERM), "
        f"{len(outcomes.transport_errors)} refused, handled by the gateway: {len(handled)}, "
        f"failed: {sum(1 for s in outcomes.answered.values() if s != 200)}"
    )
    assert returncode == 0
    assert outcomes.answered, "no request got through before the signal"
    assert set(outcomes.answered.values()) == {200}
    # every request the gateway handled was answered 200 and reached its caller
    assert set(handled.values()) == {200}
    assert set(handled) == set(outcomes.answered)
    # a transport error only for requests the gateway never read
    assert not set(outcomes.transport_errors) & set(handled)
    # queued and running requests were finished after the signal, not dropped
    assert answered_after_signal >= 1
    # the shadow log was flushed: whole lines, for answered digits requests only
    shadowed = [orjson.loads(line) for line in shadow_log.read_bytes().splitlines()]
    digits = {rid for rid in outcomes.answered if int(rid[1:].split("-")[0]) % 2}
    assert shadowed
    assert {entry["request_id"] for entry in shadowed} <= digits
    assert all(entry["shadow_version"] == "2" for entry in shadowed)
    if workers > 1:  # the workers' shared directory is gone with them
        assert not list(tmp_path.glob("gateway-workers-*"))
