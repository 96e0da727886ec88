"""Latency of one request at a time over one keep-alive connection (no concurrency).

    python loadtests/single_request_latency.py [--url http://127.0.0.1:8000] [--calls 1000]

Sends ``--calls`` sequential requests to ``digits`` in three forms (v2 JSON,
v2 binary tensors, v1 :predict) and prints the median, p90 and p99 round trip
in microseconds, as the client sees it. Start the gateway first (``make serve``).
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from urllib.parse import urlsplit

import numpy as np
import orjson


def _bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    pixels = np.random.default_rng(0).integers(0, 17, size=(1, 64)).astype(np.float32)
    json_body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": pixels.ravel().tolist(),
                }
            ]
        }
    )
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": pixels.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    v1_body = orjson.dumps({"instances": pixels.tolist()})
    json_headers = {"Content-Type": "application/json"}
    return {
        "v2 JSON": (json_body, json_headers),
        "v2 binary": (
            header + pixels.tobytes(),
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        ),
        "v1 predict": (v1_body, json_headers),
    }


PATHS = {
    "v2 JSON": "/v2/models/digits/infer",
    "v2 binary": "/v2/models/digits/infer",
    "v1 predict": "/v1/models/digits:predict",
}


def measure(url: str, calls: int, warmup: int = 100) -> dict[str, list[float]]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80)
    results: dict[str, list[float]] = {}
    for name, (body, headers) in _bodies().items():
        samples = []
        for i in range(warmup + calls):
            started = time.perf_counter()
            connection.request("POST", PATHS[name], body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise SystemExit(f"{name}: HTTP {response.status}")
            if i >= warmup:
                samples.append(elapsed * 1e6)
        results[name] = samples
    connection.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    print(f"{'request':<12} {'median µs':>10} {'p90 µs':>10} {'p99 µs':>10}")
    for name, samples in measure(args.url, args.calls).items():
        q = statistics.quantiles(samples, n=100)
        print(f"{name:<12} {statistics.median(samples):>10.0f} {q[89]:>10.0f} {q[98]:>10.0f}")


if __name__ == "__main__":
    main()
