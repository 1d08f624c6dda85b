"""The `grpc.aio` server: the listing service, health checking and reflection.

It runs in the HTTP app's event loop, opened and closed by the app's lifespan
(`gateway.app`), so both edges share one service and one event bus. Health
(`grpc.health.v1`) follows the readiness it is given (`ready`, what `/readyz` answers):
it is read again every `health_interval_s`, and a change reaches `Check` and every `Watch`
stream; from the moment shutdown starts it is NOT_SERVING for good. The grace period
(`grace_s`) starts then for both edges:
in-flight calls get what is left of it once the HTTP side has drained, so a stop takes at
most one grace period. Health and reflection stay open whatever credentials the listing
service asks for.

    async with serve_grpc(service, bus, ready=lambda: True, host="127.0.0.1", port=0,
                          grace_s=5) as running:
        channel = grpc.aio.insecure_channel(running.address)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.access.admission import AdmissionControl
from gateway.access.client_tokens import ClientTokens
from gateway.grpc.admission import AdmissionGate
from gateway.grpc.auth import ClientTokenGuard
from gateway.grpc.decoding import UndecodableRequests
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.grpc.servicer import ListingStatusServicer
from gateway.live.bus import EventBus
from gateway.live.changes import ChangeFeed
from gateway.service.listings import ListingService

log = logging.getLogger("gateway.grpc")

# grpc-stubs types only the threaded health servicer; the asyncio one is `health.aio`.
AsyncHealthServicer: Any = health.aio.HealthServicer  # type: ignore[attr-defined]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["ListingStatusService"].full_name


class GrpcBindError(Exception):
    """The gRPC port could not be bound; the message is one line naming it."""


class RunningGrpc:
    """A started server: where it listens, its health registry, and when its drain ends."""

    def __init__(
        self, *, host: str, port: int, health: Any, loop: asyncio.AbstractEventLoop, grace_s: float
    ) -> None:
        self.host = host
        self.port = port
        self.health = health  # AsyncHealthServicer
        self.loop = loop
        self.grace_s = grace_s
        self._drain_ends: float | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def begin_shutdown(self) -> None:
        """Report NOT_SERVING from now on; safe to call from a signal handler or any thread.

        Called at the first stop signal, so load balancers stop sending new calls while
        the HTTP side drains. The grace period starts now for both edges: calls that still
        arrive are answered, and when the app's lifespan ends the server gets only what is
        left of the grace, so a stop takes one grace period, not one per edge.
        """
        self.loop.call_soon_threadsafe(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        if self._drain_ends is None:
            self._drain_ends = self.loop.time() + self.grace_s
        self.loop.create_task(self.health.enter_graceful_shutdown())

    def grace_left(self) -> float:
        """Seconds of the grace period still to run (all of it if no signal came)."""
        if self._drain_ends is None:
            return self.grace_s
        return max(0.0, self._drain_ends - self.loop.time())


@asynccontextmanager
async def serve_grpc(
    service: ListingService,
    events: EventBus,
    *,
    changes: ChangeFeed | None = None,
    ready: Callable[[], bool],
    health_interval_s: float = 1.0,
    host: str,
    port: int,
    grace_s: float,
    tokens: ClientTokens | None = None,
    telemetry: grpc.aio.ServerInterceptor | None = None,  # type: ignore[type-arg]
    admission: AdmissionControl | None = None,
    shared_port: bool = False,
) -> AsyncIterator[RunningGrpc]:
    """Serve gRPC on `host:port` (0: any free port) for the lifetime of the block; with
    `tokens` that are required, the listing service asks callers for one; `telemetry`
    (outermost, so it sees refusals too) observes each call; unary calls take their turn
    from `admission` (the HTTP edge's budget) before anything else, as on `/graphql`.
    `shared_port`: the workers of one `gateway serve --workers N` all serve on the port
    (SO_REUSEPORT, the kernel spreads the connections)."""
    interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    if telemetry is not None:
        interceptors.append(telemetry)
    if admission is not None:
        interceptors.append(AdmissionGate(admission, SERVICE_NAME))
    interceptors.append(ClientTokenGuard(tokens or ClientTokens(()), SERVICE_NAME))
    # Innermost: the handlers every other interceptor wraps already parse leniently.
    interceptors.append(UndecodableRequests())
    server = grpc.aio.server(
        interceptors=interceptors,
        # Without SO_REUSEPORT a second gateway on the same port fails instead of sharing it.
        options=[("grpc.so_reuseport", 1 if shared_port else 0)],
    )
    servicer = ListingStatusServicer(service, events, changes)
    pb_grpc.add_ListingStatusServiceServicer_to_server(servicer, server)
    health_servicer = AsyncHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        raise GrpcBindError(f"gRPC port {host}:{port} is in use or unavailable") from None
    await server.start()
    serving = ready()
    await _set_health(health_servicer, serving)
    following = asyncio.create_task(
        _follow_readiness(health_servicer, ready, serving, health_interval_s), name="grpc-health"
    )
    running = RunningGrpc(
        host=host,
        port=bound,
        health=health_servicer,
        loop=asyncio.get_running_loop(),
        grace_s=grace_s,
    )
    log.info("gRPC listening on %s", running.address)
    try:
        yield running
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await health_servicer.enter_graceful_shutdown()
        await servicer.close()
        await server.stop(running.grace_left())


async def _set_health(health: Any, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        await health.set(name, status)


async def _follow_readiness(
    health: Any, ready: Callable[[], bool], serving: bool, interval_s: float
) -> None:
    """Keep `health` at what `ready()` says (`serving` now), read every `interval_s`; once
    shutdown has begun the health servicer ignores these updates."""
    while True:
        await asyncio.sleep(interval_s)
        now_ready = ready()
        if now_ready != serving:
            await _set_health(health, now_ready)
            log.info("gRPC health: %s", "SERVING" if now_ready else "NOT_SERVING")
            serving = now_ready
