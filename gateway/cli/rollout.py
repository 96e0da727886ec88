"""``gateway rollout start|status|abort``: the rollout admin API from a terminal, with
the evaluations printed as a table."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import orjson

GATES = ("error_rate", "p99_ratio", "disagreement", "psi")
RUNNING = ("shadowing", "stepping")
POLL_S = 0.5


class ApiError(Exception):
    """The gateway refused (its status and message), or could not be reached."""


def call(method: str, url: str, token: str, body: Any = None) -> dict[str, Any]:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = orjson.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read()).get("error", "")
        except (orjson.JSONDecodeError, AttributeError):
            message = ""
        raise ApiError(f"{exc.code}: {message or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"cannot reach {url}: {exc}") from None


def wait(url: str, token: str, seconds: float) -> dict[str, Any]:
    """The rollout's state once it has finished, or as it stands after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        state = call("GET", url, token)
        if state["state"] not in RUNNING or time.monotonic() >= deadline:
            return state
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))


def plan(
    version: int,
    shadow_s: float | None,
    steps: list[float] | None,
    interval_s: float | None,
    gates: list[str],
) -> dict[str, Any]:
    """The POST body from the flags (``--gate max_error_rate=0.02`` and the like)."""
    body: dict[str, Any] = {"version": version}
    if shadow_s is not None:
        body["shadow_s"] = shadow_s
    if steps:
        body["steps"] = steps
    if interval_s is not None:
        body["interval_s"] = interval_s
    limits: dict[str, float | int] = {}
    for gate in gates:
        name, _, value = gate.partition("=")
        if not value:
            raise ApiError(f"--gate takes NAME=VALUE (e.g. max_error_rate=0.02), got {gate!r}")
        try:
            limits[name] = int(value) if name == "min_requests" else float(value)
        except ValueError:
            raise ApiError(f"--gate {name}: {value!r} is not a number") from None
    if limits:
        body["gates"] = limits
    return body


def describe(state: dict[str, Any]) -> str:
    """The rollout as a few lines and a table of its evaluations."""
    lines = [
        f"model {state['model']}: version {state['canary']} over {state['stable']}, "
        f"{state['state']}, canary weight {state['weight']:g}%",
    ]
    evaluations = state.get("evaluations", [])
    if not evaluations:
        lines.append("no evaluation yet")
        return "\n".join(lines)
    started = float(state["evaluations"][0]["at"])
    header = ["t (s)", "phase", "weight", "verdict", "requests", *GATES]
    rows = [header]
    for item in evaluations:
        cells = [
            f"{float(item['at']) - started:.1f}",
            item["phase"],
            f"{item['weight']:g}%",
            item["verdict"],
            str(item["requests"]),
        ]
        for name in GATES:
            gate = item["gates"].get(name, {})
            value = gate.get("value")
            mark = "" if gate.get("passed", True) else " FAIL"
            cells.append("-" if value is None else f"{value:.3g}/{gate['limit']:g}{mark}")
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
