"""Feature stores: where the per-entity HASHes live.

``RedisStore`` talks to one Redis server or a Redis Cluster with redis-py's
asyncio client (hiredis parses the replies); ``MemoryStore`` serves the same
layout from memory, filled from a CSV or JSONL file, so a gateway runs without
Redis. Both answer ``fetch``: for each key, the values of the asked fields, in
one round trip for all the keys (one per cluster node).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.features.breaker import CircuitBreaker
from gateway.features.rows import read_rows

log = logging.getLogger("gateway.features")

Values = list[bytes | str | None]

# a store that failed this many calls in a row is skipped, then probed every cooldown
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 1.0
CONNECT_TIMEOUT_S = 1.0


class StoreUnavailable(Exception):
    """The store could not answer (down, slow, or skipped while its breaker is open)."""


class FeatureStore(Protocol):
    name: str

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[str], timeout_s: float
    ) -> list[Values]:
        """For each key, the values of ``fields`` (None where absent); raises
        StoreUnavailable."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """HASHes in a dict. Rows from a file are indexed lazily by each key template, since
    the file names entities by a column and each model has its own key layout."""

    name = "memory"

    def __init__(self, rows: Iterable[Mapping[str, str]] = ()) -> None:
        self._rows = list(rows)
        self._hashes: dict[str, dict[str, str]] = {}
        self._indexed: set[tuple[str, str]] = set()

    @classmethod
    def from_file(cls, path: Path) -> MemoryStore:
        rows: list[dict[str, str]] = []
        skipped = 0
        for row in read_rows(path):
            if row.error is not None:
                skipped += 1
                log.warning("%s line %d skipped: %s", path, row.line, row.error)
            else:
                rows.append(row.values)
        log.info("features file %s: %d rows (%d skipped)", path, len(rows), skipped)
        return cls(rows)

    def index(self, template: str, entity: str) -> None:
        """Make the file's rows reachable under ``template`` (its ``{entity}`` column)."""
        if (template, entity) in self._indexed:
            return
        self._indexed.add((template, entity))
        placeholder = "{" + entity + "}"
        for row in self._rows:
            entity_id = row.get(entity)
            if entity_id:
                fields = {k: v for k, v in row.items() if k != entity}
                self._hashes.setdefault(template.replace(placeholder, entity_id), {}).update(fields)

    def put(self, key: str, fields: Mapping[str, str]) -> None:
        self._hashes.setdefault(key, {}).update(fields)

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[str], timeout_s: float
    ) -> list[Values]:
        empty: dict[str, str] = {}
        hashes = self._hashes
        return [[hashes.get(key, empty).get(f) for f in fields] for key in keys]

    async def aclose(self) -> None:
        return None


# HMGET for every key, in one command and one reply: the client-side cost per key of a
# pipeline (a command to pack, a reply to read, each through redis-py) is about 4x that
# of one more key here, and on a busy gateway that client-side CPU is what it pays for
_HMGET_ALL = """
local values = {}
for i, key in ipairs(KEYS) do
  values[i] = redis.call('HMGET', key, unpack(ARGV))
end
return values
"""


class RedisStore:
    """One round trip per fetch, under a timeout and a circuit breaker: a script running
    HMGET per key on a single server; on a cluster, a pipeline of HMGETs (one round trip
    per node, as a script may only touch keys of one slot)."""

    def __init__(
        self,
        client: Any,
        name: str,
        now: Callable[[], float],
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self._hmget_all = None if self._cluster else client.register_script(_HMGET_ALL)
        self.name = name
        self.breaker = CircuitBreaker(BREAKER_THRESHOLD, BREAKER_COOLDOWN_S, now)
        self._on_error = on_error

    @classmethod
    def from_url(
        cls, url: str, now: Callable[[], float], on_error: Callable[[], None] | None = None
    ) -> RedisStore:
        return cls(connect(url), redacted(url), now, on_error)

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[str], timeout_s: float
    ) -> list[Values]:
        if not self.breaker.allow():
            raise StoreUnavailable(f"{self.name} is failing; skipped until the next probe")
        try:
            async with asyncio.timeout(timeout_s):
                replies: list[Values]
                if self._hmget_all is not None:
                    replies = await self._hmget_all(keys, fields)
                else:
                    pipe = self._client.pipeline(transaction=False)
                    for key in keys:
                        pipe.hmget(key, fields)
                    replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failed()
            if self._on_error is not None:
                self._on_error()
            reason = f"no answer within {timeout_s * 1000:g} ms" if _is_timeout(exc) else exc
            raise StoreUnavailable(f"{self.name}: {reason}") from None
        self.breaker.succeeded()
        return replies

    async def aclose(self) -> None:
        await self._client.aclose()


def open_store(
    redis_url: str | None,
    features_file: Path | None,
    now: Callable[[], float],
    on_error: Callable[[], None] | None = None,
) -> FeatureStore:
    """Redis when a URL is given; otherwise memory, filled from the file if there is one."""
    if redis_url is not None:
        return RedisStore.from_url(redis_url, now, on_error)
    if features_file is not None:
        return MemoryStore.from_file(features_file)
    return MemoryStore()


def connect(url: str) -> Any:
    """A client for ``redis://``, ``rediss://``, ``unix://`` or, for a cluster,
    ``redis+cluster://`` / ``rediss+cluster://`` (any one node; the rest is discovered)."""
    scheme = urlsplit(url).scheme
    # one immediate retry on a broken connection: after Redis restarts, the pooled
    # connections are dead and the first command on each reconnects
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }
    if scheme.endswith("+cluster"):
        plain = urlunsplit(urlsplit(url)._replace(scheme=scheme.removesuffix("+cluster")))
        return RedisCluster.from_url(plain, **options)
    return Redis.from_url(url, **options)


def redacted(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) and not isinstance(exc, RedisError)
