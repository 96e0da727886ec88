"""RedisStore: feature rows from one Redis server or a Redis Cluster.

redis-py's asyncio client, hiredis parsing the replies. One round trip per
fetch, under a timeout and a circuit breaker.

On a single server the fetch is one script call (``_FETCH_ROWS``): it runs HMGET
per key and returns the rows whose values are all numbers as packed FP32, so
the gateway neither reads one reply per key nor parses decimal text (each about
as costly as the rest of a request's lookup); the other rows (absent fields,
values that are not numbers) come back as raw values, to be parsed with exact
error messages. On a cluster, where a script may only touch keys of one slot,
the fetch is a pipeline of HMGETs: one round trip per node.

While Redis fails, a ``CircuitBreaker`` keeps requests from waiting on it:
closed --(``threshold`` consecutive failures)--> open --(``cooldown_s``)--> half-open;
half-open lets one probe through: success closes, failure opens again. While open,
callers skip the dependency at once instead of each waiting out its timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from enum import Enum
from functools import partial
from typing import Any

import numpy as np
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gateway.errors import FeatureDataInvalid
from gateway.features.rows import FeatureRow, row_from_store, rows_from_replies
from gateway.features.stores import StoreUnavailable
from gateway.redis_client import CONNECT_TIMEOUT_S, connect, redacted

log = logging.getLogger("gateway.features")

# a store that failed this many calls in a row is skipped, then probed every cooldown
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 1.0

# KEYS: the entities; ARGV: the fields. Returns {packed, bad, raw}: ``packed`` holds
# every row as little-endian FP32 (zeros for a bad row), ``bad`` the 1-based indexes of
# the rows with an absent field or a value that is not a finite FP32 number, ``raw``
# their HMGET replies (values cut to 256 bytes: enough to parse or show a number), or,
# for a key that is not a HASH, the error HMGET answered (one malformed entity does not
# fail the others).
_FETCH_ROWS = """
local width = #ARGV
local format = '<' .. string.rep('f', width)
local zeros = string.rep('\\0', 4 * width)
local packed, bad, raw = {}, {}, {}
for i, key in ipairs(KEYS) do
  local values = redis.pcall('HMGET', key, unpack(ARGV))
  local numbers = {}
  if values.err then
    numbers = nil
    values = values.err
  else
    for j = 1, width do
      local number = values[j] and tonumber(values[j])
      if not number or number ~= number or number > 3.4028234663852886e38
          or number < -3.4028234663852886e38 then
        numbers = nil
        break
      end
      numbers[j] = number
    end
  end
  if numbers then
    packed[i] = struct.pack(format, unpack(numbers))
  else
    packed[i] = zeros
    bad[#bad + 1] = i
    if type(values) == 'table' then
      for j = 1, width do
        if values[j] and #values[j] > 256 then values[j] = string.sub(values[j], 1, 256) end
      end
    end
    raw[#raw + 1] = values
  end
end
return {table.concat(packed), bad, raw}
"""


_SCRIPT_SHA_TEXT = hashlib.sha1(_FETCH_ROWS.encode(), usedforsecurity=False).hexdigest()


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


_SCRIPT_SHA = _bulk(_SCRIPT_SHA_TEXT.encode())


class RedisStore:
    def __init__(
        self,
        client: Any,
        name: str,
        now: Callable[[], float],
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._single = not isinstance(client, RedisCluster)
        self._fields: dict[tuple[str, ...], bytes] = {}  # the fields, packed once per model
        self.name = name
        self.breaker = CircuitBreaker(BREAKER_THRESHOLD, BREAKER_COOLDOWN_S, now)
        self._on_error = on_error

    @classmethod
    def from_url(
        cls, url: str, now: Callable[[], float], on_error: Callable[[], None] | None = None
    ) -> RedisStore:
        return cls(connect(url), redacted(url), now, on_error)

    async def fetch_rows(
        self, keys: Sequence[str], fields: Sequence[str], defaults: np.ndarray, timeout_s: float
    ) -> list[FeatureRow | FeatureDataInvalid]:
        if not self.breaker.allow():
            raise StoreUnavailable(
                f"{self.name} is failing; skipped until the next probe", "skipped"
            )
        try:
            async with asyncio.timeout(timeout_s):
                if self._single:
                    reply = await self._run_script(keys, fields)
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for key in keys:
                        pipe.hmget(key, fields)
                    # errors in place: a key that is not a HASH fails itself alone
                    replies = _entity_errors(await pipe.execute(raise_on_error=False))
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed()
            if self._on_error is not None:
                self._on_error()
            if _is_timeout(exc):
                raise StoreUnavailable(
                    f"{self.name}: no answer within {timeout_s * 1000:g} ms", "timeout"
                ) from None
            kind = "connection" if isinstance(exc, (RedisConnectionError, OSError)) else "error"
            raise StoreUnavailable(f"{self.name}: {exc}", kind) from None
        except BaseException:
            self.breaker.failed()  # whatever it was, a half-open probe must not stay pending
            raise
        self.breaker.succeeded()
        if not self._single:
            return _cluster_rows(keys, fields, replies, defaults)
        return _unpack(keys, fields, reply, defaults)

    async def _run_script(self, keys: Sequence[str], fields: Sequence[str]) -> list[Any]:
        """EVALSHA straight on a pooled connection: the command packed here in one piece
        (the fields once per model), one reply read. redis-py's generic command path
        costs more than the rest of the fetch; its connections still handle TLS, auth,
        unix sockets and reconnecting."""
        packed = self._fields.get(tuple(fields))
        if packed is None:
            packed = self._fields[tuple(fields)] = b"".join(_bulk(f.encode()) for f in fields)
        count = str(len(keys)).encode()
        command = b"".join(
            [
                b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + len(keys) + len(fields)),
                _SCRIPT_SHA,
                _bulk(count),
                *[_bulk(key.encode()) for key in keys],
                packed,
            ]
        )
        pool = self._client.connection_pool
        for retry in (False, True):
            connection = await _connection(pool)
            try:
                await connection.send_packed_command(command, check_health=False)
                return list(await connection.read_response())
            except NoScriptError:  # a restarted or flushed server: load it, once
                if retry:
                    raise
                await self._client.script_load(_FETCH_ROWS)
            except RedisConnectionError:
                # a pooled connection that died with the server: one fresh try
                await connection.disconnect()
                if retry:
                    raise
            finally:
                await pool.release(connection)
        raise AssertionError("unreachable: the second try returns or raises")

    async def start(self) -> None:
        """Connect (and load the script) before the first request, with the connect
        timeout rather than a fetch's; a Redis that is not up yet is logged, not fatal."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S * 5):
                if self._single:
                    await self._client.script_load(_FETCH_ROWS)
                else:
                    await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("feature store %s is not reachable yet: %s", self.name, exc or "timeout")

    async def aclose(self) -> None:
        await self._client.aclose()


async def _connection(pool: Any) -> Any:
    """A connection from the pool. Connecting (TCP, perhaps TLS) may take longer than a
    fetch may: a fetch that times out meanwhile leaves the connect running, and the
    connection then goes back to the pool for the next fetch."""
    acquire = asyncio.ensure_future(pool.get_connection())
    try:
        return await asyncio.shield(acquire)
    except asyncio.CancelledError:
        acquire.add_done_callback(partial(_return_to_pool, pool))
        raise


def _return_to_pool(pool: Any, acquire: asyncio.Future[Any]) -> None:
    if not acquire.cancelled() and acquire.exception() is None:
        release = asyncio.ensure_future(pool.release(acquire.result()))
        _releasing.add(release)
        release.add_done_callback(_releasing.discard)


_releasing: set[asyncio.Future[None]] = set()  # strong references until done


def _unpack(
    keys: Sequence[str], fields: Sequence[str], reply: list[Any], defaults: np.ndarray
) -> list[FeatureRow | FeatureDataInvalid]:
    packed, bad, raw = reply
    step = 4 * len(fields)
    # each row its own small read-only array, not a view of the reply: rows are cached
    # and shared, and a view would keep the whole reply alive while any one row stays
    rows: list[FeatureRow | FeatureDataInvalid] = [
        FeatureRow(np.frombuffer(packed[start : start + step], "<f4"), True)
        for start in range(0, len(keys) * step, step)
    ]
    missing = FeatureRow(defaults, found=False)
    for index, values in zip(bad, raw, strict=True):
        key = keys[index - 1]
        if isinstance(values, (bytes, str)):  # HMGET's error: not a HASH
            rows[index - 1] = _not_a_hash(key, values)
        elif values.count(None) == len(fields):  # no such entity
            rows[index - 1] = missing
        else:
            try:
                rows[index - 1] = row_from_store(key, fields, values, defaults)
            except FeatureDataInvalid as error:
                rows[index - 1] = error
    return rows


def _entity_errors(replies: list[Any]) -> list[Any]:
    """A cluster pipeline's replies, where an error that concerns one key alone (not a
    HASH) is kept in its place; any other error fails the whole fetch (raised)."""
    for reply in replies:
        if isinstance(reply, BaseException) and not _wrong_type(reply):
            raise reply
    return replies


def _cluster_rows(
    keys: Sequence[str], fields: Sequence[str], replies: list[Any], defaults: np.ndarray
) -> list[FeatureRow | FeatureDataInvalid]:
    if not any(isinstance(reply, BaseException) for reply in replies):
        return rows_from_replies(keys, fields, replies, defaults)
    rows: list[FeatureRow | FeatureDataInvalid] = []
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, BaseException):
            rows.append(_not_a_hash(key, str(reply)))
        else:
            rows.extend(rows_from_replies([key], fields, [reply], defaults))
    return rows


def _wrong_type(error: BaseException) -> bool:
    return isinstance(error, ResponseError) and str(error).startswith("WRONGTYPE")


def _not_a_hash(key: str, error: bytes | str) -> FeatureDataInvalid:
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else error
    return FeatureDataInvalid(f"feature store: {key} is not a HASH ({text[:80]})")


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) and not isinstance(exc, RedisError)


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, threshold: int, cooldown_s: float, now: Callable[[], float]) -> None:
        if threshold < 1 or cooldown_s <= 0:
            raise ValueError("threshold must be >= 1 and cooldown_s > 0")
        self._threshold = threshold
        self._cooldown = cooldown_s
        self._now = now
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = BreakerState.CLOSED

    def allow(self) -> bool:
        """Whether a call may go to the dependency now."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._now() - self._opened_at >= self._cooldown:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True  # exactly one probe at a time
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False
        self.state = BreakerState.CLOSED

    def failed(self) -> None:
        self._probing = False
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN or self._failures >= self._threshold:
            self.state = BreakerState.OPEN
            self._opened_at = self._now()
