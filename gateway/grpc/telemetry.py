"""Metrics, a server span and a log line per listing-service call, as the HTTP edge has.

Each call to `listing.v1.ListingStatusService` continues the caller's W3C trace from its
`traceparent`/`tracestate` metadata, opens the request's `RequestRecord` (so upstream calls
made for it are counted), and at the end writes `gateway_requests_total` and the latency
histogram under the operation `grpc.<Method>` and one access-log line. The outcome is `ok`,
`partial` (a listing came back with per-source errors), `rejected` (refused arguments or
credentials, or an unknown listing), `overloaded` (refused at admission) or `error`. Health and reflection pass untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.observability import Metrics, RequestRecord, current_record
from gateway.observability.logs import access_log
from gateway.observability.spans import unrecorded_span

_W3C: Final = TraceContextTextMapPropagator()
_REJECTED: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
    }
)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Continuation: TypeAlias = (
    "Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]]"
)


def mark_partial() -> None:
    """Record that the current call answered with per-source errors."""
    record = current_record.get()
    if record is not None and record.outcome == "ok":
        record.outcome = "partial"


class CallTelemetry(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps each call to `service` in its span, record, metrics and log line."""

    def __init__(
        self, service: str, *, metrics: Metrics, tracer: trace.Tracer, recording: bool = True
    ) -> None:
        self._prefix = f"/{service}/"
        self._metrics = metrics
        self._tracer = tracer
        # Not recording: the call's span keeps the trace going unrecorded (as over HTTP).
        self._recording = recording

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        operation = "grpc." + method.removeprefix(self._prefix)
        carrier = {
            key: value
            for key, value in handler_call_details.invocation_metadata or ()
            if key in ("traceparent", "tracestate") and isinstance(value, str)
        }
        # grpc-stubs types the handlers of the threaded server; these are coroutines.
        if handler.response_streaming:
            stream: Any = handler.unary_stream

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                with self._observed(operation, carrier, context):
                    async for item in stream(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(
                streaming,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        unary: Any = handler.unary_unary

        async def answering(request: Any, context: Context) -> Any:
            with self._observed(operation, carrier, context):
                return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            answering,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observed(self, operation: str, carrier: dict[str, str], context: Context) -> _Observed:
        return _Observed(self, operation, carrier, context)


class _Observed:
    """The span, record and metrics of one call, as a context manager."""

    def __init__(
        self, owner: CallTelemetry, operation: str, carrier: dict[str, str], context: Context
    ) -> None:
        self.owner = owner
        self.operation = operation
        self.carrier = carrier
        self.context = context
        self.record = RequestRecord(operation=operation)

    def __enter__(self) -> None:
        self.started = time.perf_counter()
        parent = _W3C.extract(self.carrier)
        self.span_cm = (
            self.owner._tracer.start_as_current_span(
                self.operation,
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.method": self.operation},
                record_exception=False,
            )
            if self.owner._recording
            else unrecorded_span(parent)
        )
        span = self.span = self.span_cm.__enter__()
        self.record.trace_id = format(span.get_span_context().trace_id, "032x")
        self.token = current_record.set(self.record)
        self.owner._metrics.in_flight += 1

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        metrics = self.owner._metrics
        metrics.in_flight -= 1
        current_record.reset(self.token)
        record = self.record
        code = self.context.code()
        if isinstance(exc, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        elif exc is not None and code is None:
            code = grpc.StatusCode.UNKNOWN
        # An outcome a refusal set itself (admission: `overloaded`) is kept.
        if code is not None and code != grpc.StatusCode.OK and record.outcome in ("ok", "partial"):
            record.outcome = "rejected" if code in _REJECTED else "error"
        seconds = time.perf_counter() - self.started
        # This call's own span: a call cancelled at its deadline may end in another context,
        # whose current span is someone else's (and has ended).
        span = self.span
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", (code or grpc.StatusCode.OK).value[0])
            span.set_attribute("gateway.outcome", record.outcome)
            span.set_attribute("gateway.upstream_calls", record.upstream_calls)
        self.span_cm.__exit__(kind, exc, tb)
        metrics.request_done(record.operation, record.outcome, seconds)
        access_log.info(
            "gRPC %s %s %s in %.1f ms, %d upstream calls, trace %s",
            record.operation,
            record.outcome,
            (code or grpc.StatusCode.OK).name,
            seconds * 1000,
            record.upstream_calls,
            record.trace_id,
            extra={
                "trace_id": record.trace_id,
                "operation": record.operation,
                "outcome": record.outcome,
                "status": (code or grpc.StatusCode.OK).name,
                "duration_ms": round(seconds * 1000, 3),
                "upstream_calls": record.upstream_calls,
            },
        )
