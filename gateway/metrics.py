"""Every Prometheus metric the gateway exports, defined on an injected registry (the
drift gauges: ``drift_metrics``). Labels name the version that answered, never the one
asked for. On the request path, counts go into plain Python numbers (``Tally``,
``Spread``): no label lookup, no lock, no bucket scan; ``flush`` moves them into
prometheus_client's metric values whenever the registry is read. All of it runs on the
event loop thread. With several worker processes (``shared_dir``), prometheus_client
keeps every value in a file per process there, ``render`` answers the sum over all of
them, and each worker flushes on a timer too (``flush_every``): a scrape reaches one.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import weakref
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway import __version__
from gateway.drift_metrics import DriftCollector, DriftSource
from gateway.packages import onnxruntime_version
from gateway.tallies import Spread, Tally

T = TypeVar("T", Tally, Spread)


class CacheSize(Sized, Protocol):  # a feature lookup's local cache, as its gauges read it
    bytes: int  # charged for the entries held now (len(): how many)


DISPATCH_REASONS = ("full", "preferred", "delay", "idle")
FEATURE_SOURCES = ("local", "redis", "default")
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# request latency from a fraction of a millisecond (batch 1, small model) to seconds
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, registry: CollectorRegistry | None = None, shared_dir: Path | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.shared_dir = shared_dir
        self.drift_source: DriftSource | None = None  # set by the app: see drift_metrics
        # gauges: summed over live workers (depth), or the same in each of them (info)
        self.build_info = Gauge(
            "gateway_build_info",
            "Always 1; the labels say which gateway, Python and onnxruntime are running",
            ["version", "python", "onnxruntime"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        running = (__version__, platform.python_version(), onnxruntime_version())
        self.build_info.labels(*running).set(1)
        self.model_info = Gauge(
            "gateway_model_info",
            "1 for each model version serving (by the sha256 of its model file); a version "
            "that left is removed (0 with several workers)",
            ["model", "version", "sha256"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.requests = Counter(
            "gateway_requests",
            "Inference requests answered, by the version that answered and status code",
            ["model", "version", "protocol", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from a request's arrival to its response, by the version that answered",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_loads = Counter(
            "gateway_model_loads",
            "Model version load attempts by outcome (success, failed)",
            ["model", "version", "outcome"],
            registry=self.registry,
        )

        labels = ["model", "version"]
        self.batch_size = Histogram(
            "gateway_batch_size",
            "Rows per model run",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth",
            "Requests waiting for a batch",
            labels,
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "gateway_queue_duration_seconds",
            "Time a request waited in its version's queue before its batch ran",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_duration = Histogram(
            "gateway_inference_duration_seconds",
            "Time of one model run (one batch)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_dispatch = Counter(
            "gateway_batch_dispatch",
            "Batches run, by why the batch was cut: full (max_batch_size reached), preferred "
            "(a preferred size reached), delay (max_queue_delay_ms ran out while waiting for "
            "announced requests), idle (nothing else was on its way)",
            ["model", "version", "reason"],
            registry=self.registry,
        )

        pair = ["model", "primary", "shadow"]
        self.shadow_requests = Counter(
            "gateway_shadow_requests",
            "Requests copied to a shadow version and run there, by model, primary and shadow",
            pair,
            registry=self.registry,
        )
        self.shadow_errors = Counter(
            "gateway_shadow_errors",
            "Shadow runs that failed on the shadow version (or gave incomparable outputs)",
            pair,
            registry=self.registry,
        )
        self.shadow_disagreements = Counter(
            "gateway_shadow_disagreements",
            "Shadow runs where the argmax of the first output differs in some row",
            pair,
            registry=self.registry,
        )
        self.shadow_abs_diff = Histogram(
            "gateway_shadow_abs_diff",
            "Largest absolute difference between primary and shadow outputs, per request",
            pair,
            buckets=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0),
            registry=self.registry,
        )
        self.shadow_drops = Counter(
            "gateway_shadow_dropped",
            "Requests not copied to the shadow version because too many shadow runs were in flight",
            pair,
            registry=self.registry,
        )
        self.feature_lookups = Counter(
            "gateway_feature_lookups",
            "Entity rows whose features came from the local cache (local), Redis or the "
            "in-process store (redis), or the defaults (default: not in the store, whether "
            "that answer was fetched or cached, or the store unavailable and nothing cached)",
            ["model", "source"],
            registry=self.registry,
        )
        self.feature_fetch_keys = Histogram(
            "gateway_feature_fetch_keys",
            "Keys per feature store round trip (one pipelined fetch for a batch of lookups)",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "gateway_redis_errors",
            "Feature store calls that failed or timed out",
            registry=self.registry,
        )
        self.feature_cache_bytes = Gauge(
            "gateway_feature_cache_bytes",
            "Bytes a model's local feature cache holds: keys, rows and a fixed overhead per "
            "entry (at most [features] local_max_bytes)",
            ["model"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.feature_cache_entries = Gauge(
            "gateway_feature_cache_entries",
            "Entries in a model's local feature cache (at most [features] local_max_entries)",
            ["model"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        # read when flushed; weak: a cache goes with its model's [features]
        self._caches: dict[str, weakref.ref[CacheSize]] = {}
        # label lookups cost more than the increments: bind each combination once
        self._request_children: dict[tuple[str, str, str, int], tuple[Tally, Spread | None]] = {}
        self._unflushed: list[Tally | Spread] = []
        self._feature_children: dict[str, FeatureMetrics] = {}
        # read when flushed: nothing to do per request
        self._depths: dict[tuple[str, str], tuple[Gauge, Callable[[], int]]] = {}
        self._serving: set[tuple[str, str, str]] = set()

    def _track(self, instrument: T) -> T:
        self._unflushed.append(instrument)
        return instrument

    def flush(self) -> None:
        """Move the counts gathered on the request path into the Prometheus metrics."""
        for instrument in self._unflushed:
            instrument.flush()
        for gauge, waiting in self._depths.values():
            gauge.set(waiting())
        for model, reference in self._caches.items():
            cache = reference()
            self.feature_cache_bytes.labels(model).set(0 if cache is None else cache.bytes)
            self.feature_cache_entries.labels(model).set(0 if cache is None else len(cache))

    async def flush_every(self, seconds: float) -> None:
        """Flush until cancelled, then once more (for a worker among several)."""
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()

    def serving(self, versions: Iterable[tuple[str, int, str]]) -> None:
        """The (model, version, sha256) now answering requests, after any change."""
        now = {(model, str(version), sha256) for model, version, sha256 in versions}
        for labels in now - self._serving:
            self.model_info.labels(*labels).set(1)
        for labels in self._serving - now:
            self._forget(self.model_info, labels)
        self._serving = now
        versions_now = {labels[:2] for labels in now}
        for pair in [k for k in self._depths if k not in versions_now]:
            del self._depths[pair]
            self._forget(self.queue_depth, pair)

    def _forget(self, gauge: Gauge, labels: tuple[str, ...]) -> None:
        if self.shared_dir is not None:  # other workers may still report these labels
            gauge.labels(*labels).set(0)
            return
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)

    def batch_observer(self, model: str, version: int) -> BatchMetrics:
        return BatchMetrics(self, model, str(version))

    def feature_observer(self, model: str) -> FeatureMetrics:
        observer = self._feature_children.get(model)
        if observer is None:  # one per model, however often it reloads
            observer = self._feature_children[model] = FeatureMetrics(self, model)
        return observer

    def redis_error(self) -> None:
        self.redis_errors.inc()

    def shadow_done(
        self,
        model: str,
        primary: str,
        shadow: str,
        disagrees: bool | None,
        max_abs_diff: float | None,
    ) -> None:
        """``disagrees`` None: the shadow failed or its outputs could not be compared."""
        labels = (model, primary, shadow)
        self.shadow_requests.labels(*labels).inc()
        if disagrees is None:
            self.shadow_errors.labels(*labels).inc()
            return
        if disagrees:
            self.shadow_disagreements.labels(*labels).inc()
        if max_abs_diff is not None:
            self.shadow_abs_diff.labels(*labels).observe(max_abs_diff)

    def shadow_dropped(self, model: str, primary: str, shadow: str) -> None:
        self.shadow_drops.labels(model, primary, shadow).inc()

    def model_loaded(self, model: str, version: int | None, outcome: str) -> None:
        """``version`` None: the model as a whole (e.g. its model.toml) failed."""
        self.model_loads.labels(model, "" if version is None else str(version), outcome).inc()

    def request_done(
        self, model: str, version: str, protocol: str, code: int, seconds: float
    ) -> None:
        key = (model, version, protocol, code)
        record = self._request_children.get(key)
        if record is None:
            counter = self._track(Tally(self.requests.labels(model, version, protocol, str(code))))
            duration = (
                self._track(Spread(self.request_duration.labels(model, version)))
                if version
                else None
            )
            record = self._request_children[key] = (counter, duration)
        record[0].count += 1
        if record[1] is not None:
            record[1].observe(seconds)

    def _collected(self) -> CollectorRegistry:
        """The registry to read, flushed: with several workers, the sum over them all."""
        self.flush()
        if self.shared_dir is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.shared_dir))  # type: ignore[no-untyped-call]
        return registry

    def render(self) -> bytes:
        text = generate_latest(self._collected())
        if self.drift_source is not None:
            text += generate_latest(DriftCollector(self.drift_source))
        return text

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """Every sample now, as (name, labels, value): what a rollout's gates read."""
        for family in self._collected().collect():
            for sample in family.samples:
                yield sample.name, sample.labels, sample.value


class BatchMetrics:
    """One version's batching metrics, bound to their labels once."""

    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        track = metrics._track
        self._size = track(Spread(metrics.batch_size.labels(model, version)))
        self._metrics = metrics
        self._labels = (model, version)
        self.waited = track(Spread(metrics.queue_duration.labels(model, version))).observe
        self.ran = track(Spread(metrics.inference_duration.labels(model, version))).observe
        self._reasons = {
            reason: track(Tally(metrics.batch_dispatch.labels(model, version, reason)))
            for reason in DISPATCH_REASONS
        }

    def dispatched(self, rows: int, reason: str) -> None:
        self._size.observe(rows)
        self._reasons[reason].count += 1

    def track_depth(self, waiting: Callable[[], int]) -> None:
        metrics = self._metrics
        metrics._depths[self._labels] = (metrics.queue_depth.labels(*self._labels), waiting)


class FeatureMetrics:
    """One model's feature lookup counts, bound to their labels once."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._sources = {
            source: metrics._track(Tally(metrics.feature_lookups.labels(model, source)))
            for source in FEATURE_SOURCES
        }
        self.fetched = metrics._track(Spread(metrics.feature_fetch_keys.labels(model))).observe

    def counter(self, source: str) -> Tally:
        return self._sources[source]

    def track_cache(self, cache: CacheSize) -> None:
        """Report the size of ``cache`` (the model's current one) when flushed."""
        self._metrics._caches[self._model] = weakref.ref(cache)


def worker_gone(shared_dir: Path, pid: int) -> None:
    """Stop counting a worker's gauges (its counters and histograms still count)."""
    mark_process_dead(pid, str(shared_dir))  # type: ignore[no-untyped-call]


def workers_with_gauges(shared_dir: Path) -> set[int]:
    """The pids whose live gauges are in the directory (prometheus_client's file names)."""
    pids = set()
    for path in shared_dir.glob("gauge_live*_*.db"):
        with contextlib.suppress(ValueError):
            pids.add(int(path.stem.rsplit("_", 1)[1]))
    return pids
