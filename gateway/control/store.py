"""ControlStore: the protocol both places of the desired state answer, and picking one.

``write`` is atomic: the model's generation goes up by one and the given fields of
its record (``routing_field``, ``loaded_field``) are set in one step, and it returns
the whole record as it then stands. Two concurrent changes of one field end as the
later generation's, never a mix; changes of different fields both hold.
``wait_changed`` returns early when another writer announces a change (pub/sub, or
the file changing); followers re-read on a timer anyway, so a missed announcement
only delays. ``hold_lease`` takes a named lease, or renews it for its holder, for
``ttl_s`` seconds, atomically: at most one holder at a time across every worker and
replica, and a holder that stops renewing (it died) loses it when it runs out.
``share`` puts one replica's document on a named board, replacing its last one, and
``shared`` reads every replica's; a replica that stops sharing drops off the board
after ``records.BOARD_STALE_S`` (how a rollout's controller counts every replica's requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from gateway.control.records import Applied, ModelRecord


class ControlStore(Protocol):
    description: str  # for messages: where the state lives

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...
    async def read(self) -> dict[str, ModelRecord]: ...
    async def write(self, model: str, fields: Mapping[str, str]) -> ModelRecord: ...
    async def report(self, applied: Applied) -> None: ...
    async def applied(self) -> list[Applied]: ...
    async def wait_changed(self, timeout_s: float) -> None: ...
    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool: ...
    async def release_lease(self, name: str, holder: str) -> None: ...
    async def lease_holder(self, name: str) -> str | None: ...
    async def share(self, board: str, replica: str, document: Mapping[str, Any]) -> None: ...
    async def shared(self, board: str) -> dict[str, dict[str, Any]]: ...


def open_control_store(control_url: str | None, directory: Path, member: str) -> ControlStore:
    """Redis for ``--control-url``, else the file in ``directory`` (which the workers of
    one gateway share). ``member``: this worker's name in the applied reports."""
    if control_url is not None:
        from gateway.control.redis_state import RedisControlStore

        return RedisControlStore(control_url, member)
    from gateway.control.file_state import FileControlStore

    return FileControlStore(directory, member)


def generations(records: Mapping[str, ModelRecord]) -> dict[str, int]:
    return {name: record.generation for name, record in records.items()}
