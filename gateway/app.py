"""create_app(settings): the Starlette application and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from gateway.config import Settings, worker_directory
from gateway.control.store import open_control_store
from gateway.errors import ConfigError, ControlUnavailable, GatewayError
from gateway.http import responses
from gateway.http.inference import InferenceRoutes
from gateway.http.routes import ROUTES
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.payload.sinks import open_sink
from gateway.payload.writer import PayloadWriter
from gateway.payload_metrics import PayloadMetrics
from gateway.protocol.tensors import quiet_float_casts
from gateway.repository.registry import ModelRegistry
from gateway.repository.watcher import RepositoryWatcher
from gateway.rollout_metrics import RolloutMetrics
from gateway.routing.shadow import ShadowScheduler
from gateway.service import InferenceService, ModelCatalog
from gateway.service.desired_state import StateFollower
from gateway.service.drift import DriftExchange, DriftMonitor
from gateway.service.feature_wiring import FeatureWiring, describe_source, open_store
from gateway.service.rollouts import RolloutController
from gateway.workers import WorkerGroup

YOUNG_COLLECTION_ALLOCATIONS = 10_000

log = logging.getLogger("gateway.features")


def create_app(settings: Settings, shared_dir: Path | None = None) -> ASGIApp:
    """``shared_dir``: the directory of a group of ``settings.workers`` worker processes."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        metrics = Metrics(shared_dir=shared_dir)
        group = WorkerGroup(shared_dir, settings.workers) if shared_dir is not None else None
        async with AsyncExitStack() as stack:
            if group is not None:
                stack.callback(group.left)  # last: after the final flush of its metrics
                flushing = asyncio.get_running_loop().create_task(metrics.flush_every(1.0))
                stack.push_async_callback(_cancel, flushing)
            shared = None
            if settings.redis_url is not None or settings.features_file is not None:
                shared = open_store(
                    settings.redis_url, settings.features_file, time.monotonic, metrics.redis_error
                )
                stack.push_async_callback(shared.aclose)  # after the registry has drained
                await shared.start()
            log.info(describe_source(settings.redis_url, settings.features_file))
            registry = await stack.enter_async_context(
                ModelRegistry(
                    settings.model_repository,
                    observer=metrics,
                    drain_timeout_s=settings.drain_timeout,
                    features=FeatureWiring(shared, required=True, observers=metrics),
                )
            )
            await stack.enter_async_context(RepositoryWatcher(registry, settings.poll_interval))
            follower, replica = await _follow_the_desired_state(
                stack, settings, shared_dir, registry
            )
            # unwinds after the shadows: a shadowed request's record waits for its shadow
            payload = _open_payload_log(stack, settings, metrics)
            shadows = ShadowScheduler(metrics, settings.shadow_log)
            # unwinds before the registry: shadows finish while their versions still serve
            stack.push_async_callback(shadows.aclose, settings.drain_timeout)
            # the models and everything loaded with them live until shutdown: keep the
            # cyclic garbage collector from scanning them again and again under load
            gc.freeze()
            # and run it less often: a request's objects mostly die young, but the payload
            # log keeps each record's for up to 50 ms; at the default of 700 allocations
            # the collector then ran 65 times a second, 2% of a core (SPEC 14's budget
            # is 5%). Cycles still get collected, 10,000 container objects later.
            gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, *gc.get_threshold()[1:])
            if group is not None:
                group.joined(registry.state.ready and follower.synced)
                reporting = asyncio.get_running_loop().create_task(
                    group.report_every(1.0, lambda: registry.state.ready and follower.synced)
                )
                stack.push_async_callback(_cancel, reporting)
            drift = _monitor_drift(stack, metrics, registry, shared_dir)
            rollouts = RolloutController(
                follower, replica, metrics, RolloutMetrics(metrics.registry)
            )
            controlling = asyncio.get_running_loop().create_task(rollouts.run())
            stack.push_async_callback(_cancel, controlling)
            service = InferenceService(
                registry,
                metrics,
                shadows,
                logging.getLogger("gateway.requests").isEnabledFor(logging.DEBUG),
                payload,
                settings.payload_sample,
            )
            catalog = ModelCatalog(
                follower, None if group is None else group.all_ready, drift, rollouts
            )
            admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
            if settings.grpc_port is not None:
                await _serve_grpc(stack, settings, service, catalog, admin_token)
            yield {
                "service": service,
                "catalog": catalog,
                "metrics": metrics,
                "max_body_bytes": settings.max_body_bytes,
                "read_timeout": settings.read_timeout,
                "admin_token": admin_token,
            }

    # the inference paths bypass Starlette's routing (the hot path); the rest uses it
    return InferenceRoutes(
        Starlette(
            routes=ROUTES,
            lifespan=lifespan,
            exception_handlers={
                HTTPException: responses.http_exception,
                GatewayError: responses.gateway_exception,
                Exception: responses.unhandled_exception,
            },
        )
    )


def app_from_environment() -> ASGIApp:
    """Factory for worker processes: each rebuilds the settings from GATEWAY_* variables."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    quiet_float_casts()  # runs in the worker's serve task, before its listening socket
    return create_app(settings, worker_directory())


async def _follow_the_desired_state(
    stack: AsyncExitStack, settings: Settings, shared_dir: Path | None, registry: ModelRegistry
) -> tuple[StateFollower, str]:
    """Read and apply the desired state (Redis with --control-url, else a file the
    workers share: a private directory for a gateway of one process), then follow it.
    Also gives this gateway's name among the replicas: its host and that directory,
    which no other gateway shares."""
    directory = shared_dir
    if directory is None:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-")))
    member = f"{socket.gethostname()}/{os.getpid()}"
    store = open_control_store(settings.control_url, directory, member)
    await store.start()
    stack.push_async_callback(store.aclose)
    follower = StateFollower(store, registry, member)
    try:
        await follower.sync()
    except ControlUnavailable as exc:  # not ready until it has been applied
        logging.getLogger("gateway.control").warning("%s", exc.message)
    following = asyncio.get_running_loop().create_task(follower.run())
    stack.push_async_callback(_cancel, following)
    return follower, f"{socket.gethostname()}/{directory.name}"


def _monitor_drift(
    stack: AsyncExitStack, metrics: Metrics, registry: ModelRegistry, shared_dir: Path | None
) -> DriftMonitor:
    """The drift figures for /metrics and the admin API; with several workers, each
    shares its window totals every second so that any worker's figures cover all."""
    exchange = DriftExchange(shared_dir) if shared_dir is not None else None
    monitor = DriftMonitor(registry, exchange)
    metrics.drift_source = lambda: (
        (model, version, figures.rows, figures.psi, figures.score)
        for model, version, figures in monitor.figures()
    )
    if exchange is not None:

        async def share() -> None:
            while True:
                await asyncio.sleep(1.0)
                exchange.publish(registry)

        sharing = asyncio.get_running_loop().create_task(share())
        stack.callback(exchange.forget)
        stack.push_async_callback(_cancel, sharing)
    return monitor


async def _serve_grpc(
    stack: AsyncExitStack,
    settings: Settings,
    service: InferenceService,
    catalog: ModelCatalog,
    admin_token: str | None,
) -> None:
    """gRPC beside HTTP on this event loop; on shutdown it stops taking RPCs first and
    gives those running the drain timeout. Imported only when asked for: most gateways
    never load grpcio."""
    from gateway.rpc.health import GatewayHealth
    from gateway.rpc.server import start_grpc_server, stop_grpc_server
    from gateway.rpc.servicer import InferenceServicer

    assert settings.grpc_port is not None
    health = GatewayHealth(catalog)
    server = await start_grpc_server(
        InferenceServicer(service, catalog, admin_token),
        health,
        settings.host,
        settings.grpc_port,
        settings.max_body_bytes,
    )
    stack.push_async_callback(stop_grpc_server, server, health, settings.drain_timeout)


def _open_payload_log(
    stack: AsyncExitStack, settings: Settings, metrics: Metrics
) -> PayloadWriter | None:
    """The payload log's writer (``--payload-log``), closed at shutdown once what is
    queued is written (or ``--drain-timeout`` has passed)."""
    if settings.payload_log is None:
        return None
    try:
        sink = open_sink(settings.payload_log, settings.payload_max_len)
    except OSError as exc:
        raise ConfigError(f"--payload-log {settings.payload_log}: {exc}") from None
    writer = PayloadWriter(sink, PayloadMetrics(metrics.registry))

    async def close() -> None:
        await asyncio.to_thread(writer.close, max(settings.drain_timeout, 1.0))

    stack.push_async_callback(close)
    logging.getLogger("gateway.payload").info(
        "payload log: %s, %g of requests", sink.description, settings.payload_sample
    )
    return writer


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
