"""[features] config, request decoding and FeatureLookup batching, without HTTP or Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import pytest

from gateway.errors import ConfigError, FeatureStoreUnavailable, InvalidRequest
from gateway.features.fetches import FETCH_CHUNK
from gateway.features.lookup import CacheSize, FeatureLookup
from gateway.features.rows import FeatureRow, entity_ids, take_overrides
from gateway.features.section import FeaturesSection
from gateway.features.stores import MemoryStore, StoreUnavailable, Values
from gateway.protocol.signature import Signature, TensorSpec
from gateway.repository.loader import check_features
from gateway.repository.spec import parse_model_config

BASE = {
    "entity_input": "user_id",
    "key": "user:{user_id}",
    "fields": ["age", "balance"],
    "input": "features",
}


def section(**overrides: object) -> FeaturesSection:
    features = parse_model_config({"features": {**BASE, **overrides}}).features
    assert features is not None
    return features


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": "user:{id}"}, "exactly one placeholder, {user_id}"),
        ({"key": "user:{user_id}:{user_id}"}, "exactly one placeholder"),
        ({"defaults": {"height": 1.0}}, "defaults name fields that are not in fields: ['height']"),
        ({"fields": ["age", "age"]}, "fields are listed more than once: ['age']"),
        ({"fields": ["age", "user_id"]}, "must all have different names"),
        ({"input": "user_id"}, "must all have different names"),
        ({"missing": "skip"}, "[features] missing: input should be 'default' or 'error'"),
        ({"on_redis_error": "retry"}, "input should be 'default' or 'error'"),
        ({"redis_timeout_ms": 0}, "[features] redis_timeout_ms"),
        ({"local_max_entries": 0}, "[features] local_max_entries"),
        ({"local_max_bytes": 0}, "[features] local_max_bytes"),
        ({"max_ids": 0}, "[features] max_ids"),
        ({"fields": []}, "[features] fields"),
        ({"colour": "red"}, "unknown key [features] colour"),
    ],
)
def test_invalid_features_sections(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        section(**overrides)
    assert message in str(error.value)


def test_features_defaults() -> None:
    parsed = section(defaults={"age": 35})
    assert parsed.defaults == {"age": 35.0}
    assert (parsed.missing, parsed.on_redis_error) == ("default", "default")
    assert (parsed.local_ttl_ms, parsed.local_max_entries, parsed.redis_timeout_ms) == (
        1000.0,
        100_000,
        20.0,
    )
    assert (parsed.local_max_bytes, parsed.max_ids) == (64 * 1024 * 1024, 4096)
    assert parse_model_config({}).features is None


def signature(*inputs: TensorSpec) -> Signature:
    return Signature(inputs, (TensorSpec("out", "FP32", (-1, 2)),))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((TensorSpec("x", "FP32", (-1, 2)),), "input = 'features' is not an input of the model"),
        ((TensorSpec("features", "FP64", (-1, 2)),), "must be FP32 [-1, 2]"),
        ((TensorSpec("features", "FP32", (-1, 3)),), "but the model has FP32 [-1, 3]"),
        ((TensorSpec("features", "FP32", (-1,)),), "must be FP32 [-1, 2]"),
        (
            (TensorSpec("features", "FP32", (-1, 2)), TensorSpec("age", "FP32", (-1,))),
            "must not be model inputs, but ['age'] are",
        ),
    ],
)
def test_features_must_fit_the_model(inputs: tuple[TensorSpec, ...], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_features(section(), signature(*inputs))
    assert message in str(error.value)
    check_features(section(), signature(TensorSpec("features", "FP32", (-1, 2))))


def ids(*values: object) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def test_entity_ids_are_checked() -> None:
    assert entity_ids("user_id", ids(b"u1", b"u2"), "BYTES") == ["u1", "u2"]
    assert entity_ids("user_id", ids(b"u1", b"u2").reshape(2, 1), "BYTES") == ["u1", "u2"]
    cases = [
        (np.zeros(2, np.float32), "FP32", "must be BYTES, got FP32"),
        (
            ids(b"a", b"b").reshape(1, 2),
            "BYTES",
            "shape [n] or [n, 1] with n >= 1 entity ids, got [1, 2]",
        ),
        (ids(), "BYTES", "got [0]"),
        (ids(b"a", b""), "BYTES", "element 1 is an empty entity id"),
        (ids(b"\xff"), "BYTES", "element 0 is not UTF-8 text"),
    ]
    for array, datatype, message in cases:
        with pytest.raises(InvalidRequest) as error:
            entity_ids("user_id", array, datatype)
        assert message in error.value.message


def test_entity_ids_are_limited_in_count_and_bytes() -> None:
    """At most max_ids ids, each at most 256 bytes of UTF-8; the message says the limit
    and what was received."""
    assert entity_ids("user_id", ids(*[b"u"] * 3), "BYTES", max_ids=3) == ["u"] * 3
    assert entity_ids("user_id", ids(b"x" * 256), "BYTES") == ["x" * 256]
    cases = [
        (
            ids(*[b"u"] * 4),
            "input 'user_id' carries 4 entity ids; a request may carry at most 3 "
            "([features] max_ids)",
        ),
        (
            ids(b"x" * 257),
            "input 'user_id' element 0 is an entity id of 257 bytes; entity ids are at "
            "most 256 bytes",
        ),
        (ids(b"ok", "é" * 129), "element 1 is an entity id of 258 bytes"),
    ]
    for array, message in cases:
        with pytest.raises(InvalidRequest) as error:
            entity_ids("user_id", array, "BYTES", max_ids=3)
        assert message in error.value.message


def test_overrides_are_taken_out_of_the_inputs() -> None:
    inputs: dict[str, np.ndarray] = {
        "balance": np.array([[1], [2]], np.int32),
        "other": np.zeros(2),
    }
    datatypes = {"balance": "INT32", "other": "FP64"}
    overrides = take_overrides(["age", "balance"], "user_id", 2, inputs, datatypes)
    assert [(c, v.tolist(), v.dtype) for c, v in overrides] == [
        (1, [1.0, 2.0], np.dtype(np.float32))
    ]
    assert list(inputs) == ["other"] and list(datatypes) == ["other"]
    for array, datatype, message in [
        (ids(b"1", b"2"), "BYTES", "overrides a feature and must be numeric, got BYTES"),
        (
            np.zeros(3, np.float32),
            "FP32",
            "expected shape [2] or [2, 1] (one value per id in 'user_id'), got [3]",
        ),
    ]:
        with pytest.raises(InvalidRequest) as error:
            take_overrides(["age"], "user_id", 2, {"age": array}, {"age": datatype})
        assert message in error.value.message


class CountingStore(MemoryStore):
    """The in-memory store, recording each fetch; ``gate`` holds fetches until set."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.down = False

    async def fetch(
        self, keys: Sequence[str], fields: Sequence[str], timeout_s: float
    ) -> list[Values]:
        self.fetches.append(list(keys))
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise StoreUnavailable("test store is down")
        return await super().fetch(keys, fields, timeout_s)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class Counter:
    count = 0


class Counts:
    def __init__(self) -> None:
        self.counters: dict[str, Counter] = {}
        self.fetched_keys: list[int] = []

    @property
    def sources(self) -> dict[str, int]:
        return {source: c.count for source, c in self.counters.items() if c.count}

    def counter(self, source: str) -> Counter:
        return self.counters.setdefault(source, Counter())

    def fetched(self, keys: int) -> None:
        self.fetched_keys.append(keys)

    def track_cache(self, cache: CacheSize) -> None:
        self.cache = cache


def lookup(
    store: CountingStore, clock: Clock, counts: Counts | None = None, **overrides: object
) -> FeatureLookup:
    store.put("user:a", {"age": "30", "balance": "1.5"})
    store.put("user:b", {"age": "40"})
    return FeatureLookup("m", section(defaults={"balance": -1}, **overrides), store, clock, counts)


def vectors(rows: Sequence[FeatureRow]) -> list[list[float]]:
    return [row.vector.tolist() for row in rows]


def test_concurrent_lookups_share_one_fetch_and_the_cache() -> None:
    store, clock, counts = CountingStore(), Clock(), Counts()
    features = lookup(store, clock, counts)

    async def scenario() -> None:
        results = await asyncio.gather(
            features.rows(["a", "b"]), features.rows(["b", "nobody"]), features.rows(["a"])
        )
        assert vectors(results[0]) == [[30.0, 1.5], [40.0, -1.0]]
        assert vectors(results[1]) == [[40.0, -1.0], [0.0, -1.0]]
        assert [r.found for r in results[1]] == [True, False]
        # three callers, four keys asked for, three distinct: one fetch
        assert store.fetches == [["user:a", "user:b", "user:nobody"]]
        assert vectors(await features.rows(["a", "b", "nobody"])) == [
            [30.0, 1.5],
            [40.0, -1.0],
            [0.0, -1.0],
        ]
        assert len(store.fetches) == 1  # all three from the local cache, misses included
        clock.t += 1.0  # local_ttl_ms = 1000
        await features.rows(["a"])
        assert store.fetches[1:] == [["user:a"]]

    asyncio.run(scenario())
    # "nobody" got the defaults both times, once fetched and once from the local cache
    # (the store's "no such entity", cached): both are counted as default, not local
    assert counts.sources == {"redis": 5, "default": 2, "local": 2}
    assert counts.fetched_keys == [3, 1]


def test_keys_asked_for_during_a_fetch_go_together_in_the_next() -> None:
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock)

    async def scenario() -> None:
        store.gate = asyncio.Event()
        first = asyncio.ensure_future(features.rows(["a"]))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert store.fetches == [["user:a"]]  # out, and held
        later = [asyncio.ensure_future(features.rows([key, "a"])) for key in ("b", "c", "b")]
        await asyncio.sleep(0)
        store.gate.set()
        await asyncio.gather(first, *later)
        # "a" was in flight: shared, not fetched again; b and c went together
        assert store.fetches == [["user:a"], ["user:b", "user:c"]]

    asyncio.run(scenario())


def test_a_caller_that_gives_up_does_not_cancel_a_shared_fetch() -> None:
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock)

    async def scenario() -> None:
        store.gate = asyncio.Event()
        leaving = asyncio.ensure_future(features.rows(["a"]))
        staying = asyncio.ensure_future(features.rows(["a"]))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        store.gate.set()
        assert vectors(await staying) == [[30.0, 1.5]]
        assert leaving.cancelled()

    asyncio.run(scenario())


def test_store_down_answers_from_stale_cache_then_defaults_or_503() -> None:
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock)
    strict = lookup(store, clock, on_redis_error="error")

    async def scenario() -> None:
        await features.rows(["a"])
        clock.t += 5.0  # expired
        store.down = True
        rows = await features.rows(["a", "b"])
        assert vectors(rows) == [[30.0, 1.5], [0.0, -1.0]]  # stale a; b was never cached
        with pytest.raises(FeatureStoreUnavailable) as error:
            await strict.rows(["a"])
        assert "unavailable (test store is down)" in error.value.message

    asyncio.run(scenario())


def test_missing_error_names_the_missing_entities() -> None:
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock, missing="error")

    async def scenario() -> None:
        with pytest.raises(InvalidRequest) as error:
            await features.rows(["a", "x", "y", "x"] + [f"z{n}" for n in range(12)])
        message = error.value.message
        assert message.startswith("no features for user_id 'x', 'y', 'z0'")
        assert "and 4 more in the feature store (key 'user:{user_id}')" in message

    asyncio.run(scenario())


def test_fill_replaces_ids_and_overrides_with_the_feature_input() -> None:
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock)

    async def scenario() -> None:
        inputs = {"user_id": ids(b"a", b"b"), "balance": np.array([7.0, 8.0])}
        datatypes = {"user_id": "BYTES", "balance": "FP64"}
        await features.fill(inputs, datatypes)
        assert datatypes == {"features": "FP32"}
        assert inputs["features"].dtype == np.float32
        assert inputs["features"].tolist() == [[30.0, 7.0], [40.0, 8.0]]
        # every field given: nothing to look up
        everything = {"user_id": ids(b"q"), "age": np.array([1.0]), "balance": np.array([2.0])}
        await features.fill(everything, {"user_id": "BYTES", "age": "FP64", "balance": "FP64"})
        assert everything["features"].tolist() == [[1.0, 2.0]]
        assert len(store.fetches) == 1
        with pytest.raises(InvalidRequest) as error:
            await features.fill(
                {"user_id": ids(b"a"), "features": np.zeros((1, 2))},
                {"user_id": "BYTES", "features": "FP32"},
            )
        assert error.value.message == (
            "send either 'user_id' (entity ids, features looked up) or 'features' "
            "(the features themselves), not both"
        )

    asyncio.run(scenario())


def test_a_malformed_entity_is_missing_for_itself_alone() -> None:
    """A value that is not a number makes that entity missing (defaults, not cached), the
    others keep their features; with missing = "error" the 400 names it and says why."""
    store, clock, counts = CountingStore(), Clock(), Counts()
    features = lookup(store, clock, counts)
    strict = lookup(store, clock, missing="error")
    store.put("user:bad", {"age": "forty", "balance": "2"})

    async def scenario() -> None:
        rows = await features.rows(["a", "bad", "b"])
        assert vectors(rows) == [[30.0, 1.5], [0.0, -1.0], [40.0, -1.0]]
        assert [row.found for row in rows] == [True, False, True]
        await features.rows(["bad"])
        assert store.fetches[-1] == ["user:bad"]  # not cached: asked for again
        with pytest.raises(InvalidRequest) as error:
            await strict.rows(["a", "bad"])
        message = error.value.message
        assert message.startswith("no features for user_id 'bad' in the feature store")
        assert "user:bad field 'age' holds 'forty', which is not a number" in message

    asyncio.run(scenario())
    assert counts.sources == {"redis": 2, "default": 2}


def test_a_large_batch_goes_to_the_store_in_chunks() -> None:
    """However many keys are asked for together, one store call has at most FETCH_CHUNK."""
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock)

    async def scenario() -> None:
        many = [f"n{i}" for i in range(FETCH_CHUNK * 2 + 10)]
        rows, more = await asyncio.gather(features.rows(many), features.rows(["a", "zz"]))
        assert len(rows) == len(many) and vectors(more) == [[30.0, 1.5], [0.0, -1.0]]
        assert [len(keys) for keys in store.fetches] == [FETCH_CHUNK, FETCH_CHUNK, 12]
        assert sorted(k for keys in store.fetches for k in keys) == sorted(
            [f"user:{i}" for i in many] + ["user:a", "user:zz"]
        )

    asyncio.run(scenario())


def test_the_cache_is_reported_to_the_observer_and_bounded_in_bytes() -> None:
    store, clock, counts = CountingStore(), Clock(), Counts()
    features = lookup(store, clock, counts, local_max_bytes=10_000)

    async def scenario() -> None:
        for start in range(0, 400, 100):
            await features.rows([f"{n:0200d}" for n in range(start, start + 100)])

    asyncio.run(scenario())
    assert 0 < counts.cache.bytes <= 10_000 and len(counts.cache) >= 10


class Tally:
    """A request's rows by source, as the service's InferenceCall keeps them."""

    def __init__(self) -> None:
        self.features_store = 0
        self.features_default = 0

    @property
    def counts(self) -> tuple[int, int]:
        return self.features_store, self.features_default


async def fill_counted(features: FeatureLookup, *entities: bytes) -> tuple[int, int]:
    """Fill a request of ``entities`` the way the HTTP path does; its tally."""
    inputs = {"user_id": ids(*entities)}
    datatypes = {"user_id": "BYTES"}
    tally = Tally()
    pending = features.start_fill(inputs, datatypes, tally)
    if pending is not None:
        await pending.future
        pending.finish()
    assert inputs["features"].shape == (len(entities), 2)
    return tally.counts


def test_a_request_counts_its_rows_from_the_store_and_from_the_defaults() -> None:
    """Each request's tally and the metric agree on every path: fetched, cached (found or
    known to be unknown, the one-id hot path too), and the store down."""
    store, clock, counts = CountingStore(), Clock(), Counts()
    features = lookup(store, clock, counts)

    async def scenario() -> None:
        assert await fill_counted(features, b"a", b"nobody", b"b") == (2, 1)  # fetched
        assert await fill_counted(features, b"a", b"nobody") == (1, 1)  # cached
        assert await fill_counted(features, b"nobody") == (0, 1)  # cached, one id
        assert await fill_counted(features, b"b") == (1, 0)  # cached, one id
        assert len(store.fetches) == 1
        store.down = True
        clock.t += 5.0  # every entry expired: "a" answered stale, "ghost" with defaults
        assert await fill_counted(features, b"a", b"ghost") == (1, 1)
        # the caller sent every field: nothing looked up, nothing counted
        everything = {"user_id": ids(b"q"), "age": np.array([1.0]), "balance": np.array([2.0])}
        tally = Tally()
        features.start_fill(
            everything, {"user_id": "BYTES", "age": "FP64", "balance": "FP64"}, tally
        )
        assert tally.counts == (0, 0)
        await features.aclose()

    asyncio.run(scenario())
    assert counts.sources == {"redis": 2, "local": 3, "default": 4}


def test_rows_of_unknown_entities_are_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defaults served for entities the store does not have are logged with counts, at
    most one line per model per interval; rows defaulted because the store failed are
    reported as such, not as unknown; with missing = "error" nothing is served, nothing
    logged as unknown."""
    store, clock = CountingStore(), Clock()
    features = lookup(store, clock)
    strict = lookup(store, clock, missing="error")

    async def scenario() -> None:
        await fill_counted(features, b"a", b"u9999")
        await fill_counted(features, b"u9999")  # from the cache: counted, line not yet due
        await fill_counted(features, b"x", b"y")
        with pytest.raises(InvalidRequest):
            await fill_counted(strict, b"nobody")
        store.down = True
        await fill_counted(features, b"z")  # store down: a failure, not an unknown entity
        await features.aclose()
        await strict.aclose()

    with caplog.at_level(logging.WARNING, logger="gateway.features"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.features"]
    assert lines == [
        "feature store, model m: 1 row of entities not in the store (answered with the "
        "[features] defaults) in the last 0.0 s; last not in the store: user:u9999"
    ]
    assert features._fetches.failures.take() == (
        "1 store call failed (1 error; 1 keys answered from the local cache or "
        "defaults) and 3 rows of entities not in the store (answered with the [features] "
        "defaults) in the last 0.0 s; last failure: test store is down; last not in the "
        "store: user:x"
    )


def test_metadata_names_the_entity_input_and_what_it_fills() -> None:
    features = lookup(CountingStore(), Clock())
    assert features.metadata() == {
        "entity_input": {"name": "user_id", "datatype": "BYTES", "shape": [-1]},
        "input": "features",
        "key": "user:{user_id}",
        "fields": ["age", "balance"],
        "defaults": {"age": 0.0, "balance": -1.0},
        "missing": "default",
        "max_ids": 4096,
    }
