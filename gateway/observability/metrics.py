"""Prometheus metrics: one registry per app, served at `/metrics`.

Each `create_app()` builds its own `Metrics` (its own `CollectorRegistry`), so several apps
in one process (the tests) never share or double-register series. A process serves its own
numbers, except a worker of `gateway serve --workers N`: there PROMETHEUS_MULTIPROC_DIR is
set and `/metrics` answers for every worker (`gateway.observability.multiprocess`). Replicas
are scraped one by one.

Counting happens once per request and once per upstream attempt, never per field. Values the
gateway already keeps (cache stats, token fetches, unknown upstream values, breaker states,
calls in flight) are read at scrape time by collectors, so they cost nothing per request.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.domain.errors import UpstreamName
from gateway.observability.multiprocess import SharedExposition
from gateway.observability.record import current_record

__all__ = ["Metrics", "stat_counts"]

# Operation names come from callers: past a bound of distinct ones, the rest share a label.
DEFAULT_MAX_OPERATIONS: Final = 100
OTHER_OPERATIONS: Final = "other"
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


class Metrics:
    """Every metric of one app, and the `UpstreamObserver` that feeds the upstream ones."""

    def __init__(
        self,
        *,
        max_operations: int = DEFAULT_MAX_OPERATIONS,
        trusted_operations: Iterable[str] = (),
    ) -> None:
        """`max_operations` distinct operation names become labels (GATEWAY_METRICS_MAX_OPERATIONS),
        besides `trusted_operations`, the names the trusted documents give, which always do."""
        self.max_operations = max_operations
        self.trusted_operations = frozenset(trusted_operations)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._request_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._attempt_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # Set by the supervisor for its workers (read by prometheus-client at import too).
        shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.shared = SharedExposition(shared_dir) if shared_dir else None
        self.requests = Counter(
            "gateway_requests",
            "GraphQL HTTP requests and gRPC calls (grpc.<Method>) by operation and outcome "
            "(ok, partial, error, overloaded, rejected).",
            ["operation", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time from receiving a GraphQL HTTP request to its last response byte.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Requests being answered now: counted here, exported when scraped (`_Running`).
        self.in_flight = 0
        self.upstream_requests = Counter(
            "gateway_upstream_requests",
            "HTTP attempts made to an upstream, by endpoint and status "
            "(the HTTP status, timeout or connection_error).",
            ["upstream", "endpoint", "status"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Duration of one HTTP attempt to an upstream.",
            ["upstream", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries",
            "Failed upstream attempts that were retried.",
            ["upstream", "endpoint"],
            registry=r,
        )
        self.upstream_refused = Counter(
            "gateway_upstream_refused",
            "Upstream calls or retries the gateway did not make "
            "(circuit_open, concurrency_limit, retry_budget).",
            ["upstream", "reason"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_circuit_transitions",
            "Circuit breaker transitions, by the state entered.",
            ["upstream", "state"],
            registry=r,
        )
        self.legacy_batch_size = Histogram(
            "gateway_legacy_batch_size",
            "Ads asked for in one legacy POST /status/ chunk.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "gateway_event_loop_lag_seconds",
            "How late the event loop ran the last periodic probe.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.loop_lag_seconds = Histogram(
            "gateway_event_loop_lag_seconds_distribution",
            "How late the event loop ran each periodic probe.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        # Admission control's (running, queued, limit), read when scraped (`watch_admission`).
        self._admission: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        self.admission_refused = Counter(
            "gateway_admission_refused",
            "Requests refused at admission (HTTP 503 / gRPC RESOURCE_EXHAUSTED), by why "
            "(queue_full, queue_timeout).",
            ["reason"],
            registry=r,
        )
        self._operations: set[str] = set()
        self._live_collector: _LiveCollector | None = None
        # Collectors of values read at scrape time (copied for the other workers, if any).
        self._watched: list[Collector] = []
        # Gauges a request would otherwise set ~8 times, each an mmap write in a worker of
        # `serve --workers N`: two workers spent 8 % more CPU per one-listing request.
        self.watch(_Running(self))

    def exposition(self) -> bytes:
        """What `/metrics` answers: this process's registry, or every worker's values."""
        if self.shared is None:
            return generate_latest(self.registry)
        self.copy_watched()
        return generate_latest(self.shared.registry)

    def copy_watched(self) -> None:
        """Copy the scrape-time values into the workers' shared values (if there are)."""
        if self.shared is not None:
            self.shared.copy(self._watched)

    def watch(self, collector: Collector) -> None:
        """Serve `collector`'s values, read at scrape time; `unwatch` removes it."""
        self.registry.register(collector)
        self._watched.append(collector)

    def unwatch(self, collector: Collector) -> None:
        if collector in self._watched:
            self.copy_watched()  # a stopping worker's last counts stay in the sum
            self._watched.remove(collector)
            self.registry.unregister(collector)

    # --- requests ------------------------------------------------------------------------

    def operation_label(self, name: str) -> str:
        if name in self._operations or name in self.trusted_operations:
            return name
        if len(self._operations) >= self.max_operations:
            return OTHER_OPERATIONS
        self._operations.add(name)
        return name

    def request_done(self, operation: str, outcome: str, seconds: float) -> None:
        # A metric's child per label values, looked up once: `labels()` checks and joins its
        # arguments on every call, as much CPU as the counting itself.
        children = self._request_children.get((operation, outcome))
        if children is None:
            label = self.operation_label(operation)
            children = (self.requests.labels(label, outcome), self.request_seconds.labels(label))
            if label != OTHER_OPERATIONS:  # operation names beyond the bound are not kept
                self._request_children[(operation, outcome)] = children
        children[0].inc()
        children[1].observe(seconds)

    # --- UpstreamObserver ----------------------------------------------------------------

    def attempt(self, upstream: UpstreamName, endpoint: str, status: str, seconds: float) -> None:
        children = self._attempt_children.get((upstream, endpoint, status))
        if children is None:
            children = (
                self.upstream_requests.labels(upstream, endpoint, status),
                self.upstream_seconds.labels(upstream, endpoint),
            )
            # Upstreams, endpoints and outcomes are the gateway's own few names.
            self._attempt_children[(upstream, endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        record = current_record.get()
        if record is not None:
            record.upstream_calls += 1

    def retry(self, upstream: UpstreamName, endpoint: str) -> None:
        self.upstream_retries.labels(upstream, endpoint).inc()

    def refused(self, upstream: UpstreamName, endpoint: str, reason: str) -> None:
        self.upstream_refused.labels(upstream, reason).inc()

    def breaker_changed(self, upstream: UpstreamName, state: str) -> None:
        self.breaker_transitions.labels(upstream, state).inc()

    def batch(self, upstream: UpstreamName, size: int) -> None:
        if upstream == "legacy":
            self.legacy_batch_size.observe(size)

    # --- values read at scrape time ------------------------------------------------------

    def watch_admission(self, state: Callable[[], tuple[int, int, int]]) -> None:
        """Export admission control's (running, queued, limit), read when scraped."""
        self._admission = state

    def admission_state(self) -> tuple[int, int, int]:
        return self._admission()

    def watch_live(
        self,
        events: Callable[[], object],
        subscribers: Callable[[], int],
        callbacks: Callable[[], object],
    ) -> None:
        """Export the event bus and webhook counters; `unwatch_live()` removes them."""
        if self._live_collector is not None:
            self.unwatch(self._live_collector)
        self._live_collector = _LiveCollector(events, subscribers, callbacks)
        self.watch(self._live_collector)

    def unwatch_live(self) -> None:
        if self._live_collector is not None:
            self.unwatch(self._live_collector)
            self._live_collector = None


class _Running:
    """Requests in flight and admission control's state, as gauges read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        running, queued, limit = self._metrics.admission_state()
        yield GaugeMetricFamily(
            "gateway_requests_in_flight",
            "GraphQL HTTP requests and gRPC calls being answered now.",
            value=self._metrics.in_flight,
        )
        yield GaugeMetricFamily(
            "gateway_admission_in_flight",
            "GraphQL HTTP requests and unary gRPC calls admitted and running.",
            value=running,
        )
        yield GaugeMetricFamily(
            "gateway_admission_limit",
            "Requests that may run at once now, as admission control has found it "
            "(between GATEWAY_MIN_CONCURRENT_REQUESTS and GATEWAY_MAX_CONCURRENT_REQUESTS).",
            value=limit,
        )
        yield GaugeMetricFamily(
            "gateway_admission_queue_depth",
            "GraphQL HTTP requests and unary gRPC calls waiting for admission.",
            value=queued,
        )


class _LiveCollector:
    """Webhook callbacks accepted, events published, delivered and dropped, subscribers."""

    def __init__(
        self,
        events: Callable[[], object],
        subscribers: Callable[[], int],
        callbacks: Callable[[], object],
    ) -> None:
        self._events = events
        self._subscribers = subscribers
        self._callbacks = callbacks

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        callbacks = CounterMetricFamily(
            "gateway_webhook_callbacks",
            "V3 webhook callbacks accepted, by outcome (published, duplicate).",
            labels=["outcome"],
        )
        for outcome, count in stat_counts(self._callbacks()):
            callbacks.add_metric([outcome], count)
        yield callbacks
        events = CounterMetricFamily(
            "gateway_events",
            "Status events published on the bus, delivered to subscriber queues, and dropped "
            "from the queue of a subscriber that did not keep up.",
            labels=["event"],
        )
        for event, count in stat_counts(self._events()):
            events.add_metric([event], count)
        yield events
        yield GaugeMetricFamily(
            "gateway_event_subscribers",
            "Subscriptions now: GraphQL status and listing-change subscriptions, gRPC watches.",
            value=self._subscribers(),
        )


def stat_counts(stats: object) -> list[tuple[str, float]]:
    """(event, count) pairs from a stats dataclass (or a mapping) of integer counters."""
    fields: dict[str, Any]
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        fields = dataclasses.asdict(stats)
    elif isinstance(stats, dict):
        fields = stats
    else:
        return []
    return [
        (name, float(value))
        for name, value in fields.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
