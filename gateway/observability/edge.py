"""Around each `/graphql` HTTP request: its span, record, metrics and log line.

For every HTTP request to `/graphql` (`gateway.http.graphql_edge` holds it around the
request's whole handling) it continues the caller's W3C trace (`traceparent`,
`tracestate`; a new trace when absent or invalid), opens the request's `RequestRecord`,
counts it in flight, and at the end writes `gateway_requests_total`, the latency histogram
and the one log line.
Where nothing reads spans, the request's span is not recorded (`gateway.observability.spans`).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from contextvars import Token
from types import TracebackType
from typing import Final

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from gateway.observability.logs import log_request
from gateway.observability.metrics import Metrics
from gateway.observability.record import RequestRecord, current_record
from gateway.observability.spans import unrecorded_span

__all__ = ["RequestSeen", "RequestTelemetry"]

_W3C: Final = TraceContextTextMapPropagator()
_TRACE_HEADERS: Final = (b"traceparent", b"tracestate")


class RequestTelemetry:
    """Traces, counts and logs each `/graphql` HTTP request.

    >>> with telemetry.seen(scope) as seen:  # around the request's whole handling
    ...     seen.status = 200                # what `http.response.start` said
    """

    def __init__(self, *, metrics: Metrics, tracer: trace.Tracer, recording: bool = True) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.recording = recording

    def seen(self, scope: Scope) -> RequestSeen:
        """The request's telemetry, for a `with` block around all of its handling."""
        return RequestSeen(self, scope)

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


class RequestSeen:
    """One request's span, record, in-flight count, metrics and log line.

    A plain context manager, not a generator one nor an ASGI layer of its own: it runs for
    every request (`gateway.http.graphql_edge`).
    """

    __slots__ = ("_span", "_span_cm", "_started", "_token", "method", "owner", "record", "status")

    def __init__(self, owner: RequestTelemetry, scope: Scope) -> None:
        self.owner = owner
        self.method: str = scope.get("method", "GET")
        self.status = 0  # none sent yet (500 if it stays so)
        self.record = RequestRecord()
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in _TRACE_HEADERS
        }
        self._span_cm = owner._span(self.method, carrier)
        self._span: Span | None = None
        self._token: Token[RequestRecord | None] | None = None
        self._started = 0.0

    def __enter__(self) -> RequestSeen:
        self._started = time.perf_counter()
        span = self._span = self._span_cm.__enter__()
        self.record.trace_id = format(span.get_span_context().trace_id, "032x")
        self._token = current_record.set(self.record)
        self.owner.metrics.in_flight += 1
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        record, owner = self.record, self.owner
        swallowed = kind is not None and issubclass(kind, ClientDisconnect)
        if swallowed:
            # The caller left before sending its whole body (e.g. it timed out while
            # queued): nobody is there to answer, and it is not a server error.
            record.outcome = "disconnected"
            self.status = 499
        status = self.status or 500
        try:
            owner.metrics.in_flight -= 1
            if self._token is not None:
                current_record.reset(self._token)
            seconds = time.perf_counter() - self._started
            if status >= 400 and record.outcome == "ok":
                record.outcome = "rejected" if status < 500 else "error"
            span = self._span
            if span is not None and span.is_recording():
                span.set_attribute("http.response.status_code", status)
                span.set_attribute("graphql.operation.name", record.operation)
                span.set_attribute("gateway.outcome", record.outcome)
                span.set_attribute("gateway.upstream_calls", record.upstream_calls)
            owner.metrics.request_done(record.operation, record.outcome, seconds)
            log_request(record, method=self.method, status=status, seconds=seconds)
        finally:
            if swallowed:
                self._span_cm.__exit__(None, None, None)
            else:
                self._span_cm.__exit__(kind, error, tb)
        return swallowed
