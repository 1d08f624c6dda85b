"""Metrics, traces and logs: what lets an operator see the gateway work.

`Metrics` (Prometheus, one registry per app), `build_tracer_provider` (OpenTelemetry),
`configure_logging` / `log_request` (JSON or text), the `RequestTelemetry` middleware and the
event-loop lag probe. Imports nothing of the gateway but the domain, so every layer may use
it; collectors that read the runtime live beside the composition root (`gateway.collectors`).
"""

from __future__ import annotations

from gateway.observability.edge import RequestTelemetry
from gateway.observability.logs import configure_logging, log_request
from gateway.observability.loop import watch_loop_lag
from gateway.observability.metrics import Metrics
from gateway.observability.record import RequestRecord, current_record
from gateway.observability.tracing import TRACER_NAME, build_tracer_provider, exporting

__all__ = [
    "TRACER_NAME",
    "Metrics",
    "RequestRecord",
    "RequestTelemetry",
    "build_tracer_provider",
    "configure_logging",
    "current_record",
    "exporting",
    "log_request",
    "watch_loop_lag",
]
