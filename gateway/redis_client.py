"""Connecting to Redis, for every part of the gateway that does: the feature store,
``gateway features load`` and the control state (``--control-url``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

CONNECT_TIMEOUT_S = 1.0


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.endswith("+cluster")


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
    if is_cluster_url(url):
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
