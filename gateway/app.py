"""The gateway as one ASGI app: both edges on one runtime.

The HTTP edge (`/graphql`, `/healthz`, `/readyz`, `/metrics`, `/board`, the webhook
receiver) is the app; its lifespan opens the runtime (`gateway.runtime`) and, with `grpc`,
serves the gRPC edge in the same event loop. This module and `gateway.runtime` are the
composition root: the only places that know every package.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracer, Tracer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from gateway.access.admission import AdmissionControl
from gateway.access.client_tokens import ClientTokens
from gateway.collectors import RedisCollector, RuntimeCollector
from gateway.config import Settings
from gateway.graphql.executor import execution_stats
from gateway.graphql.persisted import PersistedDocuments, load_manifest, operation_names
from gateway.graphql.schema import build_schema
from gateway.graphql.view import GatewayGraphQL
from gateway.grpc.server import SERVICE_NAME, serve_grpc
from gateway.grpc.telemetry import CallTelemetry
from gateway.http.client_auth import ClientAuthGuard
from gateway.http.connections import bounded_protocol
from gateway.http.graphql_edge import GraphQLEdge
from gateway.http.limits import RequestBody
from gateway.http.pages import frontend_routes, graphiql_html, page_response
from gateway.http.receiver import receiver_route
from gateway.http.warmup import warm_up
from gateway.observability import (
    TRACER_NAME,
    Metrics,
    RequestTelemetry,
    build_tracer_provider,
    exporting,
    watch_loop_lag,
)
from gateway.observability.multiprocess import keep_copying
from gateway.runtime import Runtime, open_runtime


@asynccontextmanager
async def _grpc_edge(
    app: Starlette,
    runtime: Runtime,
    settings: Settings,
    *,
    enabled: bool,
    metrics: Metrics,
    tracer: Tracer,
    recording: bool,
    admission: AdmissionControl,
    shared_port: bool,
) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    async with serve_grpc(
        runtime.service,
        runtime.events,
        changes=runtime.changes,
        # What /readyz answers, followed while the server runs.
        ready=lambda: runtime.ready and not app.state.shutting_down,
        health_interval_s=settings.grpc_health_interval_s,
        host=settings.host,
        port=settings.grpc_port,
        grace_s=settings.shutdown_grace_s,
        tokens=ClientTokens(settings.client_tokens, default_agency=settings.v3_intermediary_id),
        telemetry=CallTelemetry(SERVICE_NAME, metrics=metrics, tracer=tracer, recording=recording),
        admission=admission,
        shared_port=shared_port,
    ) as running:
        app.state.grpc = running
        yield


async def _graphql_view(scope: Scope, receive: Receive, send: Send) -> None:
    """The app's GraphQL view, made by its lifespan (the view needs the service, which
    exists only once the lifespan has run); before that, 503 and try again."""
    view: GatewayGraphQL | None = getattr(scope["app"].state, "graphql", None)
    if view is not None:
        await view(scope, receive, send)
    elif scope["type"] == "websocket":
        await WebSocketClose(code=1013)(scope, receive, send)  # 1013: try again later
    else:
        await PlainTextResponse("Starting", status_code=503)(scope, receive, send)


class GatewayApp(Starlette):
    """The Starlette app, with `/graphql` over HTTP taken straight to its own layers.

    The request a frontend sends most needs none of what Starlette wraps around its routes
    (its error and exception layers, the router's matching): ~3 % of a one-listing request's
    CPU in a profile. The rest — other routes, WebSockets, the lifespan — is Starlette's as
    before.
    """

    graphql_http: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/graphql":
            scope["app"] = self
            await self.graphql_http(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def routed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request as Starlette's own layers and router take it."""
        await super().__call__(scope, receive, send)


# How often admission control reads the event loop's lag: a burst moves the limit within
# a few tenths of a second.
ADMISSION_PROBE_S = 0.1


def server_options(settings: Settings) -> dict[str, Any]:
    """The `uvicorn.Config` arguments that bound what connections may hold: a request's
    header deadline and size, the number of connections (`gateway.http.connections`), the
    size of a WebSocket message, how long an idle keep-alive connection stays open."""
    return {
        "http": bounded_protocol(
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
        ),
        # A WebSocket message is bounded as a request body is; a larger one closes with 1009.
        "ws_max_size": settings.max_body_bytes,
        # uvicorn's own default (5 s) is shorter than most clients' idle timeouts: a client
        # reusing a connection as the gateway closes it loses that request (12 of 200 reuses
        # near the 5 s mark here, as "Server disconnected" or "Can not write request body").
        "timeout_keep_alive": settings.keep_alive_s,
    }


def create_app(
    settings: Settings,
    *,
    grpc: bool = False,
    shared_grpc_port: bool = False,
    tracer_provider: TracerProvider | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> GatewayApp:
    """The gateway's ASGI app; upstream sessions open and close with its lifespan.

    With `grpc`, the lifespan also serves gRPC on `settings.grpc_port` in the same event
    loop (`app.state.grpc` is then the `RunningGrpc`, its bound port included), shared with
    the other workers of `gateway serve --workers N` when `shared_grpc_port`. Each app
    has its own metrics registry and, unless one is given, its own tracer provider
    (exporting over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set). `clock` drives the
    circuit breakers; tests inject one to move time without sleeping.
    """
    documents = PersistedDocuments(
        max_bytes=settings.apq_max_bytes,
        trusted=load_manifest(settings.trusted_documents) if settings.trusted_documents else None,
    )
    metrics = Metrics(
        max_operations=settings.metrics_max_operations,
        trusted_operations=operation_names((documents.trusted or {}).values()),
    )
    admission = AdmissionControl(
        max_concurrent=settings.max_concurrent_requests,
        min_concurrent=settings.min_concurrent_requests,
        lag_target_s=settings.admission_lag_target_s,
        max_queued=settings.max_queued_requests,
        queue_timeout_s=settings.queue_timeout_s,
        metrics=metrics,
    )
    provider = tracer_provider or build_tracer_provider()
    tracer = provider.get_tracer(TRACER_NAME)
    # A recorded span costs more CPU than a small request's own bookkeeping; spans are
    # recorded only where they are read (an OTLP exporter, or a provider handed in). Else the
    # edge keeps the trace going with a span it does not record (gateway.observability.edge),
    # and the operation and upstream calls make none.
    recording = tracer_provider is not None or exporting()
    detail_tracer = tracer if recording else NoOpTracer()
    schema = build_schema(
        max_listings=settings.max_listings,
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_root_fields=settings.max_root_fields,
        max_upstream_cost=settings.max_upstream_cost,
        introspection=settings.introspection,
        compiled_execution=settings.compiled_execution,
        parse_cache_bytes=settings.parse_cache_bytes,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.shutting_down = False
        async with open_runtime(
            settings, observer=metrics, tracer=detail_tracer, clock=clock
        ) as runtime:
            app.state.runtime = runtime
            app.state.graphql = GatewayGraphQL(
                schema,
                runtime.service,
                events=runtime.events,
                webhooks=runtime.webhooks,
                changes=runtime.changes,
                max_variable_depth=settings.max_variable_depth,
                max_message_bytes=settings.max_body_bytes,
                max_operations_per_socket=settings.max_subscriptions_per_connection,
                max_sockets=settings.max_ws_connections,
                admission=admission,
                documents=documents,
                tracer=detail_tracer,
                ide_page=lambda: page_response(graphiql_html(settings.board_refs)),
                connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_s),
            )
            runtime_metrics = RuntimeCollector(runtime)
            metrics.watch(runtime_metrics)
            bus = runtime.events
            metrics.watch_live(
                # Whatever the bus implementation counts; LocalEventBus keeps BusStats.
                events=lambda: getattr(bus, "stats", None),
                # Status subscribers and the slots listing-change streams hold.
                subscribers=lambda: (
                    len(getattr(bus, "subscribers", ())) + getattr(bus, "reserved", 0)
                ),
                callbacks=lambda: runtime.webhooks.stats,
            )
            redis_metrics = RedisCollector(runtime)
            metrics.watch(redis_metrics)
            if settings.warm_up:
                await warm_up(
                    app.state.graphql, runtime.upstreams.v3.credentials, settings.upstream_timeout_s
                )
            lag = asyncio.create_task(watch_loop_lag(metrics, settings.loop_lag_interval_s))
            limit = asyncio.create_task(admission.watch(ADMISSION_PROBE_S))
            # A worker of several: its scrape-time values reach the others' /metrics too.
            copying = (
                asyncio.create_task(keep_copying(metrics.copy_watched))
                if metrics.shared is not None
                else None
            )
            try:
                async with _grpc_edge(
                    app,
                    runtime,
                    settings,
                    enabled=grpc,
                    metrics=metrics,
                    tracer=tracer,
                    recording=recording,
                    admission=admission,
                    shared_port=shared_grpc_port,
                ):
                    yield
            finally:
                app.state.shutting_down = True
                for task in (lag, limit, copying):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                metrics.unwatch(redis_metrics)
                metrics.unwatch(runtime_metrics)
                metrics.unwatch_live()
        if tracer_provider is None:
            provider.shutdown()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        reasons = ["starting"] if runtime is None else runtime.not_ready_because()
        if getattr(request.app.state, "shutting_down", False):
            reasons.insert(0, "shutting down")
        ready = not reasons
        return JSONResponse(
            {
                "status": "ready" if ready else "not ready",
                "upstreamSessions": runtime is not None and runtime.upstreams.open,
                # Redis away is not a reason to refuse traffic: the replica serves alone.
                "redis": "starting" if runtime is None else runtime.redis_state,
                "reasons": reasons,
            },
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # Client tokens guard /graphql only: health, metrics and the webhook receiver stay open.
    graphql = ClientAuthGuard(
        _graphql_view,
        ClientTokens(settings.client_tokens, default_agency=settings.v3_intermediary_id),
    )
    app = GatewayApp(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            receiver_route(max_body_bytes=settings.webhook_max_body_bytes),
            Route("/metrics", metrics_endpoint),
            *frontend_routes(board_refs=settings.board_refs),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.admission = admission
    app.state.shutting_down = False
    # A body still on its way holds nothing else: every HTTP request's body is read whole
    # (bounded in size and time) before its route sees it.
    app.add_middleware(
        RequestBody, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.graphql_http = GraphQLEdge(
        graphql,
        routed=app.routed,
        telemetry=RequestTelemetry(metrics=metrics, tracer=tracer, recording=recording),
        # One budget per process: `/graphql` HTTP requests and unary gRPC calls.
        admission=admission,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        request_timeout_s=settings.request_timeout_s,
    )
    # How queries ran (compiled, fallen back to graphql-core, interpreted), for metrics.
    app.state.execution_stats = execution_stats(schema)
    return app
