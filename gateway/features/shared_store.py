"""The gateway's shared feature store, picked from its settings: Redis for
``--redis-url``, else an in-process store filled from ``--features-file``.

Apart from ``store.py`` so that the stores depend one way: ``redis_store`` builds on
``store`` (``StoreUnavailable``), and only this module knows both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.features.store import FeatureStore, MemoryStore


def open_store(
    redis_url: str | None,
    features_file: Path | None,
    now: Callable[[], float],
    on_error: Callable[[], None] | None = None,
) -> FeatureStore:
    """Redis when a URL is given; otherwise memory, filled from the file if there is one."""
    if redis_url is not None:
        # imported only with a Redis: a gateway without one never loads redis-py
        from gateway.features.redis_store import RedisStore

        return RedisStore.from_url(redis_url, now, on_error)
    if features_file is not None:
        return MemoryStore.from_file(features_file)
    return MemoryStore()
