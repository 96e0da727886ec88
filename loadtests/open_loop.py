"""Open-loop load: requests leave at a constant rate whether or not earlier ones came back.

A closed loop (wrk, locust users) waits for each answer before sending the next, so
when the server stalls the client stops sending and the stall never shows in the
percentiles ("coordinated omission"). Here every request has a scheduled send time
``start + i / rate``, and its latency is measured from that time: a request that
had to wait for a free connection counts its wait.

    python loadtests/open_loop.py http://127.0.0.1:8000/v2/models/wide/infer BODY.json \
        --rate 2000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


@dataclass
class OpenLoopResult:
    rate: float
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    unfinished: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, float]:
        values = np.array(self.latencies_s) * 1000 if self.latencies_s else np.zeros(1)
        p50, p90, p99, p999 = np.percentile(values, [50, 90, 99, 99.9])
        return {
            "target_rps": self.rate,
            "rps": len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0,
            "p50_ms": float(p50),
            "p90_ms": float(p90),
            "p99_ms": float(p99),
            "p999_ms": float(p999),
            "errors": float(self.errors + self.unfinished),
        }


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run_open_loop(
    url: str,
    body: bytes,
    rate: float,
    duration_s: float,
    connections: int = 256,
    headers: dict[str, str] | None = None,
    grace_s: float = 10.0,
) -> OpenLoopResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body
    total = int(rate * duration_s)
    result = OpenLoopResult(rate, duration_s)
    due: asyncio.Queue[float] = asyncio.Queue(maxsize=total + 1)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                scheduled = await due.get()
                writer.write(request)
                status = await _read_response(reader)
                if status == 200:
                    result.latencies_s.append(time.monotonic() - scheduled)
                else:
                    result.errors += 1
                due.task_done()
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    start = time.monotonic()
    sent = 0
    while sent < total:
        now = time.monotonic()
        # everything whose time has come goes out now, stamped with its scheduled time
        while sent < total and start + sent / rate <= now:
            due.put_nowait(start + sent / rate)
            sent += 1
        wait = start + sent / rate - time.monotonic()
        # event-loop timers tick in whole milliseconds: sleep through long gaps, then spin
        # (this is the load generator's own core) so requests leave on time
        await asyncio.sleep(wait - 0.0015 if wait > 0.002 else 0)
    try:
        await asyncio.wait_for(due.join(), timeout=grace_s)
    except TimeoutError:
        pass
    result.elapsed_s = time.monotonic() - start
    result.unfinished = total - len(result.latencies_s) - result.errors
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body", type=Path)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=256)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    started = time.perf_counter()
    result = asyncio.run(
        run_open_loop(args.url, args.body.read_bytes(), args.rate, args.duration, args.connections)
    )
    summary = result.summary()
    summary["wall_s"] = time.perf_counter() - started
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
