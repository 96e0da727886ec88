"""The desired state in Redis (``--control-url``), shared by every replica.

Keys carry one hash tag (``{gateway-control}``), so on a Redis Cluster they all
live in one slot and a change stays one atomic script call:

- ``gateway:{gateway-control}:models``: the set of model names with a record;
- ``gateway:{gateway-control}:model:NAME``: a hash of ``generation``, ``routing``
  (JSON, empty for model.toml's) and ``loaded``;
- ``gateway:{gateway-control}:lease:NAME``: who holds a lease (a rollout's
  controller), expiring unless renewed;
- ``gateway:{gateway-control}:board:NAME:REPLICA``: one replica's document on a
  board (a rollout's counts), expiring unless shared again, and
  ``gateway:{gateway-control}:board:NAME``, the set of those replicas;
- ``gateway:{gateway-control}:applied:MEMBER``: the generations one worker
  (``replica/pid``) has applied, expiring unless it says so again (every 0.5 s), and
  ``gateway:{gateway-control}:members``, the set of those workers.

A change is announced on the channel ``gateway:control``. On a single server each
follower listens to it; on a cluster (whose pub/sub redis-py's asyncio client does
not offer) followers rely on their re-read timer alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError

from gateway.control.records import BOARD_STALE_S, Applied, ModelRecord, new_change
from gateway.errors import ControlUnavailable
from gateway.redis_client import connect, is_cluster_url, redacted

log = logging.getLogger("gateway.control")

T = TypeVar("T")

_TAG = "gateway:{gateway-control}"
NAMES_KEY = f"{_TAG}:models"
MEMBERS_KEY = f"{_TAG}:members"
CHANNEL = "gateway:control"
_TIMEOUT_S = 2.0
# a worker that has not reported for this long is gone (they report twice a second)
STALE_S = 10

# KEYS: the names set, the model's hash; ARGV: name, channel, then field, value pairs.
# Returns the model's hash as it then stands.
_WRITE = """
local generation = redis.call('HINCRBY', KEYS[2], 'generation', 1)
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. generation)
return redis.call('HGETALL', KEYS[2])
"""


# KEYS: the lease; ARGV: holder, ttl in ms (0: give it back). 1 if the holder has it.
_LEASE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


def lease_key(name: str) -> str:
    return f"{_TAG}:lease:{name}"


def model_key(name: str) -> str:
    return f"{_TAG}:model:{name}"


def board_key(name: str, replica: str | None = None) -> str:
    return f"{_TAG}:board:{name}" if replica is None else f"{_TAG}:board:{name}:{replica}"


def applied_key(member: str) -> str:
    return f"{_TAG}:applied:{member}"


class RedisControlStore:
    def __init__(self, url: str, member: str) -> None:
        self.member = member
        self.description = f"Redis at {redacted(url)} (--control-url)"
        self._client = connect(url)
        self._cluster = is_cluster_url(url)
        self._pubsub: Any = None

    async def start(self) -> None:
        """Nothing to do up front: a Redis that is not up yet is waited for by the
        follower, which keeps the gateway unready until it has read the state."""

    async def aclose(self) -> None:
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self._client.aclose()

    async def read(self) -> dict[str, ModelRecord]:
        names = sorted(
            n.decode() if isinstance(n, bytes) else n
            for n in await self._call(self._client.smembers(NAMES_KEY))
        )
        if not names:
            return {}
        pipe = self._client.pipeline()
        for name in names:
            pipe.hgetall(model_key(name))
        rows = await self._call(pipe.execute())
        records: dict[str, ModelRecord] = {}
        for name, row in zip(names, rows, strict=True):
            fields = {_text(k): _text(v) for k, v in row.items()}
            records[name] = ModelRecord.from_fields(int(fields.get("generation", 0)), fields)
        return records

    async def write(self, model: str, fields: Mapping[str, str]) -> ModelRecord:
        keys = [NAMES_KEY, model_key(model)]
        pairs = [part for item in {**fields, "change": new_change()}.items() for part in item]
        flat = await self._call(self._client.eval(_WRITE, len(keys), *keys, model, CHANNEL, *pairs))
        row = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return ModelRecord.from_fields(int(row.get("generation", 0)), row)

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        ttl_ms = str(max(1, round(ttl_s * 1000)))
        held = await self._call(self._client.eval(_LEASE, 1, lease_key(name), holder, ttl_ms))
        return bool(held)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._call(self._client.eval(_LEASE, 1, lease_key(name), holder, "0"))

    async def lease_holder(self, name: str) -> str | None:
        holder = await self._call(self._client.get(lease_key(name)))
        return None if holder is None else _text(holder)

    async def share(self, board: str, replica: str, document: Mapping[str, Any]) -> None:
        stale_ms = round(BOARD_STALE_S * 1000)
        pipe = self._client.pipeline()
        pipe.set(board_key(board, replica), orjson.dumps(document), px=stale_ms)
        pipe.sadd(board_key(board), replica)
        pipe.pexpire(board_key(board), stale_ms * 4)
        await self._call(pipe.execute())

    async def shared(self, board: str) -> dict[str, dict[str, Any]]:
        listed = await self._call(self._client.smembers(board_key(board)))
        replicas = sorted(_text(replica) for replica in listed)
        if not replicas:
            return {}
        keys = [board_key(board, replica) for replica in replicas]
        documents = await self._call(self._client.mget(keys))
        found: dict[str, dict[str, Any]] = {}
        for replica, raw in zip(replicas, documents, strict=True):
            if raw is not None:
                found[replica] = orjson.loads(raw)
        gone = [replica for replica in replicas if replica not in found]
        if gone:
            await self._call(self._client.srem(board_key(board), *gone))
        return found

    async def report(self, applied: Applied) -> None:
        pipe = self._client.pipeline()
        pipe.set(applied_key(applied.member), orjson.dumps(dict(applied.generations)), ex=STALE_S)
        pipe.sadd(MEMBERS_KEY, applied.member)
        await self._call(pipe.execute())

    async def applied(self) -> list[Applied]:
        members = sorted(_text(m) for m in await self._call(self._client.smembers(MEMBERS_KEY)))
        if not members:
            return []
        reports = await self._call(self._client.mget([applied_key(m) for m in members]))
        found: list[Applied] = []
        gone: list[str] = []
        for member, raw in zip(members, reports, strict=True):
            if raw is None:  # it stopped reporting: stopped, or cut off
                gone.append(member)
            else:
                found.append(Applied(member, dict(orjson.loads(raw))))
        if gone:
            await self._call(self._client.srem(MEMBERS_KEY, *gone))
        return found

    async def wait_changed(self, timeout_s: float) -> None:
        if self._cluster:
            await asyncio.sleep(timeout_s)
            return
        try:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub()
                await self._pubsub.subscribe(CHANNEL)
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=timeout_s
                    )
                    if message is not None:
                        return
        except TimeoutError:
            return
        except (RedisError, OSError):
            # Redis went away: subscribe afresh next time; the timer covers the gap
            pubsub, self._pubsub = self._pubsub, None
            if pubsub is not None:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(timeout_s)

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                return await operation
        except (RedisError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ControlUnavailable(
                f"the control state ({self.description}) is unreachable: {reason}; the "
                "gateway keeps serving with the state it applied last, and runtime "
                "changes can be made again once Redis answers"
            ) from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
