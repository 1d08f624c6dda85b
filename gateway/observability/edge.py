"""ASGI middleware around `/graphql`: the request's span, record, metrics and log line.

For every HTTP request to `/graphql` it continues the caller's W3C trace (`traceparent`,
`tracestate`; a new trace when absent or invalid), opens the request's `RequestRecord`,
counts it in flight, and at the end writes `gateway_requests_total`, the latency histogram
and the one log line. WebSockets and the other routes pass through untouched.
Where nothing reads spans, the request's span is not recorded (`gateway.observability.spans`).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.logs import log_request
from gateway.observability.metrics import Metrics
from gateway.observability.record import RequestRecord, current_record
from gateway.observability.spans import unrecorded_span

__all__ = ["RequestTelemetry"]

_W3C: Final = TraceContextTextMapPropagator()
_TRACE_HEADERS: Final = (b"traceparent", b"tracestate")


class RequestTelemetry:
    """Traces, counts and logs each `/graphql` HTTP request."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, tracer: trace.Tracer, recording: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        self.recording = recording

    def _span(self, method: str, carrier: dict[str, str]) -> AbstractContextManager[Span]:
        parent = _W3C.extract(carrier)
        if not self.recording:
            return unrecorded_span(parent)
        return self.tracer.start_as_current_span(
            f"{method} /graphql",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": "/graphql"},
            record_exception=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/graphql":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in _TRACE_HEADERS
        }
        method = scope.get("method", "GET")
        status = 500
        record = RequestRecord()
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self._span(method, carrier) as span:
            record.trace_id = format(span.get_span_context().trace_id, "032x")
            token = current_record.set(record)
            self.metrics.in_flight += 1
            try:
                await self.app(scope, receive, send_status)
            except ClientDisconnect:
                # The caller left before sending its whole body (e.g. it timed out while
                # queued): nobody is there to answer, and it is not a server error.
                record.outcome = "disconnected"
                status = 499
            finally:
                self.metrics.in_flight -= 1
                current_record.reset(token)
                seconds = time.perf_counter() - started
                if status >= 400 and record.outcome == "ok":
                    record.outcome = "rejected" if status < 500 else "error"
                if span.is_recording():
                    span.set_attribute("http.response.status_code", status)
                    span.set_attribute("graphql.operation.name", record.operation)
                    span.set_attribute("gateway.outcome", record.outcome)
                    span.set_attribute("gateway.upstream_calls", record.upstream_calls)
                self.metrics.request_done(record.operation, record.outcome, seconds)
                log_request(record, method=method, status=status, seconds=seconds)
