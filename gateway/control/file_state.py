"""The desired state in a file, for the workers of one gateway (no ``--control-url``).

``control-state.json`` in the directory the workers share, replaced whole (written
aside, then renamed) under an exclusive lock, so readers never see half a file and
two writers never interleave. Each worker's applied generations go to a file of its
own; a worker that died is left out of the answers. The state lasts until the
gateway stops (the directory is removed with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from gateway.control.records import BOARD_STALE_S, Applied, ModelRecord, new_change
from gateway.processes import alive

STATE_FILE = "control-state.json"
LEASES_FILE = "control-leases.json"
BOARDS_FILE = "control-boards.json"
_LOCK_FILE = "control.lock"
_APPLIED_PREFIX = "control-applied-"
_POLL_S = 0.05  # how often wait_changed looks at the file: well inside the 1 s promise


class FileControlStore:
    def __init__(self, directory: Path, member: str, pid: int | None = None) -> None:
        self.directory = directory
        self.member = member
        self.pid = os.getpid() if pid is None else pid
        self.description = f"the file {directory / STATE_FILE}"
        self._path = directory / STATE_FILE
        self._seen = self._stamp()

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    async def aclose(self) -> None:
        (self.directory / f"{_APPLIED_PREFIX}{self.pid}.json").unlink(missing_ok=True)

    async def read(self) -> dict[str, ModelRecord]:
        return _records(self._load())

    async def write(self, model: str, fields: Mapping[str, str]) -> ModelRecord:
        return await asyncio.to_thread(self._write, model, fields)

    def _write(self, model: str, fields: Mapping[str, str]) -> ModelRecord:
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._locked():
            document = self._load()
            models = document.setdefault("models", {})
            record = {**models.get(model, {}), **fields, "change": new_change()}
            generation = int(record.get("generation", 0)) + 1
            record["generation"] = generation
            models[model] = record
            _replace(self._path, orjson.dumps(document))
        return ModelRecord.from_fields(generation, record)

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        return await asyncio.to_thread(self._hold, name, holder, ttl_s)

    async def release_lease(self, name: str, holder: str) -> None:
        await asyncio.to_thread(self._hold, name, holder, None)

    def _hold(self, name: str, holder: str, ttl_s: float | None) -> bool:
        """Under the lock: take or renew (``ttl_s``), or give back (None). The expiry is
        on the monotonic clock, which every process of one machine shares."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LEASES_FILE
        with self._locked():
            leases = _read_json(path)
            now = time.monotonic()
            current = leases.get(name)
            free = current is None or current["until"] <= now or current["holder"] == holder
            if not free:
                return False
            if ttl_s is None:
                leases.pop(name, None)
            else:
                leases[name] = {"holder": holder, "until": now + ttl_s}
            _replace(path, orjson.dumps(leases))
            return True

    async def lease_holder(self, name: str) -> str | None:
        current = _read_json(self.directory / LEASES_FILE).get(name)
        if current is None or current["until"] <= time.monotonic():
            return None
        return str(current["holder"])

    async def share(self, board: str, replica: str, document: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._share, board, replica, document)

    def _share(self, board: str, replica: str, document: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / BOARDS_FILE
        with self._locked():
            boards = _read_json(path)
            now = time.monotonic()
            entries = {
                name: entry for name, entry in boards.get(board, {}).items() if entry["until"] > now
            }
            entries[replica] = {"until": now + BOARD_STALE_S, "document": document}
            boards[board] = entries
            _replace(path, orjson.dumps(boards))

    async def shared(self, board: str) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        entries = _read_json(self.directory / BOARDS_FILE).get(board, {})
        return {name: entry["document"] for name, entry in entries.items() if entry["until"] > now}

    async def report(self, applied: Applied) -> None:
        document = {"member": applied.member, "generations": dict(applied.generations)}
        _replace(self.directory / f"{_APPLIED_PREFIX}{self.pid}.json", orjson.dumps(document))

    async def applied(self) -> list[Applied]:
        found: list[Applied] = []
        for path in sorted(self.directory.glob(f"{_APPLIED_PREFIX}*.json")):
            pid = path.name.removeprefix(_APPLIED_PREFIX).removesuffix(".json")
            if not (pid.isdigit() and alive(int(pid))):
                continue  # a worker killed outright leaves its file behind
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                document = orjson.loads(path.read_bytes())
                found.append(Applied(str(document["member"]), dict(document["generations"])))
        return found

    async def wait_changed(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen = stamp
                return
            await asyncio.sleep(_POLL_S)

    def _load(self) -> dict[str, Any]:
        try:
            document = orjson.loads(self._path.read_bytes())
        except FileNotFoundError:
            return {"models": {}}
        return document if isinstance(document, dict) else {"models": {}}

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_ino)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / _LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _records(document: dict[str, Any]) -> dict[str, ModelRecord]:
    records: dict[str, ModelRecord] = {}
    for name, fields in document.get("models", {}).items():
        generation = int(fields.get("generation", 0))
        records[name] = ModelRecord.from_fields(generation, fields)
    return records


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object written with ``_replace`` (empty if there is none yet)."""
    try:
        document = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return document if isinstance(document, dict) else {}


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` in one step: readers see the old file or the new one."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_bytes(data)
    os.replace(aside, path)
