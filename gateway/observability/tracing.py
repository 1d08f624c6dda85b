"""OpenTelemetry tracing: one `TracerProvider` per app, exporting over OTLP only when asked.

The standard OTel variables drive it: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans go to that collector over OTLP/HTTP in
batches; otherwise none leave the process, yet every request still gets a real trace context,
so upstream calls continue the caller's trace (W3C `traceparent`/`tracestate`).
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER` work as usual; the
default sampler follows the caller's sampled flag.

The provider is not installed globally: tests build several apps in one process, each with
its own provider (and, in tests, an in-memory exporter).
"""

from __future__ import annotations

import os
from typing import Final

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from gateway import __version__

__all__ = ["TRACER_NAME", "build_tracer_provider", "exporting"]

TRACER_NAME: Final = "gateway"
_DEFAULT_SERVICE: Final = "listing-status-gateway"


def exporting() -> bool:
    """True when the environment names an OTLP endpoint for traces."""
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def build_tracer_provider() -> TracerProvider:
    """A provider for one app; the caller shuts it down (`provider.shutdown()`) at exit."""
    attributes: dict[str, str] = {"service.version": __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = _DEFAULT_SERVICE
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporting():
        # Imported only when used: the exporter pulls in protobuf and requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
