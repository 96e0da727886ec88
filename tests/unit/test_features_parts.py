"""The pure parts of feature lookups: key templates, value parsing, the cache, the breaker."""

from __future__ import annotations

import pytest

from gateway.errors import FeatureDataInvalid
from gateway.features.cache import ENTRY_OVERHEAD, SWEEP_PER_PUT, LocalCache
from gateway.features.fetches import FailureLog
from gateway.features.redis_store import BreakerState, CircuitBreaker
from gateway.features.section import KeyTemplate, parse_values


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_key_template() -> None:
    template = KeyTemplate.parse("user:{user_id}", "user_id")
    assert template.key("u0042") == "user:u0042"
    assert KeyTemplate.parse("{user_id}", "user_id").key("x") == "x"
    for bad in ("user:", "user:{id}", "{user_id}:{user_id}", "{user_id}{other}"):
        with pytest.raises(ValueError, match="exactly one placeholder"):
            KeyTemplate.parse(bad, "user_id")


def test_parse_values() -> None:
    numbers, absent = parse_values(
        "user:1", ["age", "balance", "txn", "score"], [b"35", b" -12.5e2 ", None, "0.25"]
    )
    assert numbers == [35.0, -1250.0, None, 0.25]
    assert absent == ["txn"]
    for bad in (b"abc", b"1,5", b"", b"nan", b"1e"):
        with pytest.raises(FeatureDataInvalid, match="user:1 field 'age' holds .* not a number"):
            parse_values("user:1", ["age"], [bad])


def test_cache_expires_and_evicts_least_recently_used() -> None:
    clock = Clock()
    cache: LocalCache[int] = LocalCache(max_entries=2, ttl_s=1.0, now=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    clock.t += 1.0
    assert cache.get("a") is None and len(cache) == 2
    assert cache.get_stale("a") == 1  # expired, but still there for when the store is down
    assert cache.get_stale("b") is None  # evicted
    off: LocalCache[int] = LocalCache(max_entries=2, ttl_s=0, now=clock)
    off.put("a", 1)
    assert off.get("a") is None
    with pytest.raises(ValueError):
        LocalCache(max_entries=0, ttl_s=1, now=clock)


def test_cache_entries_expire_spread_over_the_last_part_of_their_ttl() -> None:
    clock = Clock()
    draws = iter([0.0, 0.5, 1.0])
    cache: LocalCache[int] = LocalCache(
        10, ttl_s=1.0, now=clock, jitter=0.2, random=lambda: next(draws)
    )
    for key in "abc":
        cache.put(key, 1)
    clock.t += 0.79
    assert [cache.get(k) for k in "abc"] == [1, 1, 1]
    clock.t += 0.02  # 0.81: c (0.8) is gone
    assert [cache.get(k) for k in "abc"] == [1, 1, None]
    clock.t += 0.1  # 0.91: b (0.9) too
    assert [cache.get(k) for k in "abc"] == [1, None, None]
    clock.t += 0.1  # 1.01: a (1.0) too
    assert [cache.get(k) for k in "abc"] == [None, None, None]


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state now (read through a call: mypy would otherwise keep the state an
    earlier assert narrowed it to across the calls that change it)."""
    return breaker.state


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=2.0, now=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert state(breaker) is BreakerState.CLOSED
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()  # open: callers skip the dependency at once
    clock.t += 2.0
    assert breaker.allow()  # half-open: one probe
    assert state(breaker) is BreakerState.HALF_OPEN
    assert not breaker.allow()  # ... and only one
    breaker.failed()
    assert state(breaker) is BreakerState.OPEN and not breaker.allow()
    clock.t += 2.0
    assert breaker.allow()
    breaker.succeeded()
    assert state(breaker) is BreakerState.CLOSED and breaker.allow()


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=1.0, now=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED


def test_progress_bar_on_a_terminal_and_lines_otherwise() -> None:
    import io

    from gateway.features.bulk import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = Progress(20_000, screen, min_total=10_000)
    bar.update(10_000)
    bar.update(20_000)
    bar.close()
    frames = screen.getvalue().split("\r")
    assert frames[1].startswith("[###############               ]  50.0%  10,000/20,000 rows")
    assert frames[2].startswith("[##############################] 100.0%  20,000/20,000 rows")
    assert screen.getvalue().endswith("\n")

    log = io.StringIO()
    lines = Progress(20_000, log, min_total=10_000)
    for done in range(0, 20_001, 1_000):
        lines.update(done)
    assert len(log.getvalue().splitlines()) == 11  # one per 10%

    quiet = io.StringIO()
    small = Progress(50, quiet, min_total=10_000)
    small.update(50)
    small.close()
    assert quiet.getvalue() == ""


def test_cache_is_bounded_in_bytes_and_counts_them_exactly() -> None:
    """Each entry is charged its key, its size and ENTRY_OVERHEAD; the least recently used
    go once the bytes exceed max_bytes, however few the entries."""
    clock = Clock()
    cost = len("key-0") + 100 + ENTRY_OVERHEAD
    cache: LocalCache[int] = LocalCache(1000, ttl_s=10.0, now=clock, max_bytes=3 * cost)
    for n in range(3):
        cache.put(f"key-{n}", n, 100)
    assert (len(cache), cache.bytes) == (3, 3 * cost)
    cache.put("key-1", 11, 100)  # replaced, not charged twice
    assert (len(cache), cache.bytes) == (3, 3 * cost)
    cache.put("key-3", 3, 100)  # over: key-0, the least recently used, goes
    assert cache.get_stale("key-0") is None and cache.get("key-1") == 11
    assert (len(cache), cache.bytes) == (3, 3 * cost)
    cache.put("key-4", 4, 100 + 2 * cost)  # large: makes room for itself
    assert (len(cache), cache.bytes) == (1, 3 * cost)
    cache.put("key-5", 5, 3 * cost)  # could never fit: not cached, nothing evicted
    assert cache.get("key-5") is None and cache.get("key-4") == 4
    with pytest.raises(ValueError):
        LocalCache(1, ttl_s=1, now=clock, max_bytes=0)


def test_cache_frees_expired_entries_as_new_ones_arrive() -> None:
    """Expired entries are swept a few per put, the oldest stored first, never by a scan
    of the whole cache; until then (the store down: nothing is put) get_stale finds them."""
    clock = Clock()
    cache: LocalCache[int] = LocalCache(1000, ttl_s=1.0, now=clock)
    for n in range(20):
        cache.put(f"old-{n}", n, 24)
    clock.t += 1.0
    assert len(cache) == 20 and cache.get_stale("old-0") == 0
    cache.put("new-0", 0, 24)
    assert len(cache) == 21 - SWEEP_PER_PUT  # swept a few, not all at once
    for n in range(1, 8):
        cache.put(f"new-{n}", n, 24)
    assert len(cache) == 8 and cache.bytes == 8 * (len("new-0") + 24 + ENTRY_OVERHEAD)
    assert cache.get_stale("old-19") is None
    assert [cache.get(f"new-{n}") for n in range(8)] == list(range(8))


def test_cache_frees_expired_entries_that_were_read_recently_too() -> None:
    """Reading an entry (LRU order) does not keep it past its expiry."""
    clock = Clock()
    cache: LocalCache[int] = LocalCache(1000, ttl_s=1.0, now=clock)
    cache.put("read", 1)
    cache.put("other", 2)
    clock.t += 0.5
    assert cache.get("read") == 1  # now the most recently used
    clock.t += 0.6
    cache.put("new", 3)
    assert cache.get_stale("read") is None and cache.get_stale("other") is None
    assert len(cache) == 1


def test_failure_log_reports_at_once_then_at_most_every_interval_with_counts() -> None:
    clock = Clock()
    failures = FailureLog(10.0, clock)
    assert failures.take() is None and failures.due_in() == 0
    failures.failed("connection", "redis://x: Connection refused", 3)
    assert failures.due_in() == 0
    assert failures.take() == (
        "1 store call failed (1 connection; 3 keys answered from the local cache or "
        "defaults) in the last 0.0 s; last failure: redis://x: Connection refused"
    )
    clock.t += 2.0
    failures.failed("connection", "refused", 1)
    failures.failed("skipped", "redis://x is failing; skipped until the next probe", 2)
    clock.t += 1.0
    failures.failed("timeout", "redis://x: no answer within 20 ms", 4)
    failures.malformed(2, "feature store: user:\x1b[2J is not a HASH")
    assert failures.due_in() == pytest.approx(7.0)
    clock.t += 7.0
    assert failures.due_in() == 0
    assert failures.take() == (
        "3 store calls failed (1 connection, 1 skipped, 1 timeout; 7 keys answered from "
        "the local cache or defaults) and 2 malformed entities (answered as missing) in "
        "the last 8.0 s; last failure: redis://x: no answer within 20 ms; "
        "last malformed: feature store: user:\\x1b[2J is not a HASH"
    )
    assert failures.take() is None and failures.due_in() == pytest.approx(10.0)


def test_failure_log_counts_rows_of_entities_not_in_the_store() -> None:
    clock = Clock()
    failures = FailureLog(10.0, clock)
    failures.unknown(1, "user:u9999")
    assert failures.take() == (
        "1 row of entities not in the store (answered with the [features] defaults) in "
        "the last 0.0 s; last not in the store: user:u9999"
    )
    clock.t += 1.0
    failures.unknown(3, "user:a")
    failures.failed("timeout", "no answer", 2)
    failures.unknown(2, "user:\nb")
    assert failures.due_in() == pytest.approx(9.0)
    clock.t += 9.0
    assert failures.take() == (
        "1 store call failed (1 timeout; 2 keys answered from the local cache or defaults) "
        "and 5 rows of entities not in the store (answered with the [features] defaults) "
        "in the last 9.0 s; last failure: no answer; last not in the store: user:\\nb"
    )
    assert failures.take() is None
