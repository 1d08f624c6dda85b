"""`/metrics` across the workers of `gateway serve --workers N` (prometheus-client's
multiprocess mode).

With PROMETHEUS_MULTIPROC_DIR set (the supervisor sets it for its workers, never for one
process), each counter, histogram and gauge a worker updates lives in a file of that
directory, and a scrape of any worker reads them all (`MultiProcessCollector`): counters and
histograms are summed over every worker that ever ran, so they never go backwards when one
is replaced; gauges are combined as their `multiprocess_mode` says (event-loop lag: the
worst live worker).

Values read at scrape time from what a runtime keeps (requests in flight and admission
control's state, cache events, breaker states, token fetches, the Redis link, the event
bus) exist only in the worker that keeps them, out of prometheus-client's reach. Each worker
copies them into multiprocess values: a counter by adding what it grew since the last copy,
a gauge by setting it, combined as `GAUGE_MODES` says (breaker state: the worst worker;
requests and calls in flight, admission control's state and subscribers: the sum; Redis up:
the lowest), or per worker (a `pid` label) for a gauge not listed. A worker copies its own
on every scrape it answers and every `COPY_INTERVAL_S` otherwise, so another worker's share
of these series may be that much behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["COPY_INTERVAL_S", "GAUGE_MODES", "SharedExposition"]

GaugeMode = Literal["liveall", "livesum", "livemax", "livemin", "livemostrecent"]

GAUGE_MODES: Final[dict[str, GaugeMode]] = {
    "gateway_requests_in_flight": "livesum",
    "gateway_admission_in_flight": "livesum",
    "gateway_admission_limit": "livesum",
    "gateway_admission_queue_depth": "livesum",
    "gateway_circuit_state": "livemax",
    "gateway_upstream_calls_in_flight": "livesum",
    "gateway_event_subscribers": "livesum",
    "gateway_redis_up": "livemin",
}
COPY_INTERVAL_S: Final = 1.0


class SharedExposition:
    """The registry a worker's `/metrics` serves: every worker's values, summed."""

    def __init__(self, path: str) -> None:
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=path)  # type: ignore[no-untyped-call]
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._copied: dict[tuple[str, tuple[str, ...]], float] = {}

    def copy(self, collectors: Iterable[Collector]) -> None:
        """Write what `collectors` report now into this worker's multiprocess values."""
        for collector in collectors:
            for family in collector.collect():
                for sample in family.samples:
                    if family.type == "counter" and sample.name.endswith("_total"):
                        self._add(family.name, family.documentation, sample.labels, sample.value)
                    elif family.type == "gauge":
                        self._set(family.name, family.documentation, sample.labels, sample.value)

    def _add(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Counter(name, doc, list(labels), registry=None)
        key = (name, tuple(labels.values()))
        grown = value - self._copied.get(key, 0.0)
        if grown < 0:  # counted from zero again (a new runtime in this process)
            grown = value
        self._copied[key] = value
        if grown > 0:
            (counter.labels(*labels.values()) if labels else counter).inc(grown)

    def _set(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            mode = GAUGE_MODES.get(name, "liveall")
            gauge = Gauge(name, doc, list(labels), registry=None, multiprocess_mode=mode)
            self._gauges[name] = gauge
        (gauge.labels(*labels.values()) if labels else gauge).set(value)


async def keep_copying(copy: Callable[[], None], interval_s: float = COPY_INTERVAL_S) -> None:
    """Call `copy` every `interval_s` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        copy()
