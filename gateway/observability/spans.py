"""Spans that keep a trace going without being recorded.

Where nothing reads spans (no OTLP exporter, no provider handed in), an edge's span for a
request or a call is a `NonRecordingSpan` with its own ids in the caller's trace, as the SDK
makes for a span its sampler drops: upstream calls continue it and log lines name its trace,
for a few microseconds instead of an SDK span's ~0.1 ms (a tenth of a small request's CPU,
`bench/executor.py`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

__all__ = ["inner_span", "unrecorded_span"]

_NO_SPAN: Final = nullcontext()


@contextmanager
def unrecorded_span(parent: otel_context.Context) -> Iterator[Span]:
    """The current span for the block: not recorded, in the caller's trace (a new sampled
    one when the caller sent none), with ids of its own."""
    caller = trace.get_current_span(parent).get_span_context()
    if caller.is_valid:
        trace_id, flags, state = caller.trace_id, caller.trace_flags, caller.trace_state
    else:
        trace_id, flags, state = _new_trace_id(), TraceFlags(TraceFlags.SAMPLED), None
    span = NonRecordingSpan(
        SpanContext(trace_id, _new_span_id(), is_remote=False, trace_flags=flags, trace_state=state)
    )
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        otel_context.detach(token)


def inner_span(
    tracer: trace.Tracer, name: str, attributes: dict[str, Any]
) -> AbstractContextManager[object]:
    """A span within a request (its execution, a batch of reads): the tracer's, or none where
    the tracer records nothing. A `NoOpTracer`'s span would only make the current span's
    context current again, for ~6 µs each."""
    if isinstance(tracer, trace.NoOpTracer):
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)


def _new_trace_id() -> int:
    # As the SDK's RandomIdGenerator: never the invalid id 0.
    while not (trace_id := random.getrandbits(128)):
        pass
    return trace_id


def _new_span_id() -> int:
    while not (span_id := random.getrandbits(64)):
        pass
    return span_id
