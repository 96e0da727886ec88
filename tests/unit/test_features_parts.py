"""The pure parts of feature lookups: key templates, value parsing, the cache, the breaker."""

from __future__ import annotations

import pytest

from gateway.errors import FeatureDataInvalid
from gateway.features.breaker import BreakerState, CircuitBreaker
from gateway.features.cache import LocalCache
from gateway.features.keys import KeyTemplate, parse_values


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


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=2.0, now=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()  # open: callers skip the dependency at once
    clock.t += 2.0
    assert breaker.allow()  # half-open: one probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # ... and only one
    breaker.failed()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.t += 2.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


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
