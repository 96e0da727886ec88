"""The rollout admin API as the rollout tests call it: the state of model ``pair``'s
rollout, and waiting for it to finish."""

from __future__ import annotations

import time
from typing import Any

import httpx

TOKEN = "rollout-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINISHED = ("promoted", "rolled_back", "aborted")


def rollout_state(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/models/pair/rollout", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state


def until_finished(url: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The rollout's state once it has finished; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = rollout_state(url)
        if state["state"] in FINISHED:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
