"""Prometheus collectors that read the runtime at scrape time.

They sit beside the composition root because they read what it assembled (upstream guards,
the page cache, the Redis link, the shared bus, the V3 credentials), which the metrics
package itself must not import: every layer imports observability. Nothing here is counted
per request; each value is one the runtime keeps anyway.

`RuntimeCollector`: breaker states, upstream calls in flight, cache events, token fetches,
unknown upstream values. `RedisCollector` (only when `GATEWAY_REDIS_URL` is set):
`gateway_redis_degraded_total` counts each time Redis became unavailable, `gateway_redis_up`
says whether it answers now, and the shared cache, bus and token counters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.observability.metrics import stat_counts
from gateway.runtime import Runtime
from gateway.upstreams import UNKNOWN_VALUES, BreakerState, OAuthCredentials

BREAKER_STATE_VALUES: Final = {
    BreakerState.CLOSED: 0.0,
    BreakerState.HALF_OPEN: 1.0,
    BreakerState.OPEN: 2.0,
}


class RuntimeCollector:
    """Breaker states, calls in flight, cache events, token fetches, unknown values."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        upstreams = self._runtime.upstreams
        state = GaugeMetricFamily(
            "gateway_circuit_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
            labels=["upstream"],
        )
        calls = GaugeMetricFamily(
            "gateway_upstream_calls_in_flight",
            "Upstream calls holding one of the upstream's concurrency slots.",
            labels=["upstream"],
        )
        for guard in upstreams.guards:
            state.add_metric([guard.upstream], BREAKER_STATE_VALUES[guard.breaker.state])
            calls.add_metric([guard.upstream], guard.in_flight)
        yield state
        yield calls

        cache = CounterMetricFamily(
            "gateway_cache_events",
            "V3 page cache events (hits, misses, coalesced, invalidated, stale, ...).",
            labels=["event"],
        )
        for event, count in stat_counts(self._runtime.service.cache.stats):
            cache.add_metric([event], count)
        yield cache

        tokens = CounterMetricFamily(
            "gateway_v3_token_fetches", "OAuth token requests made to the V3 token endpoint."
        )
        credentials = upstreams.v3.credentials
        fetches = credentials.fetch_count if isinstance(credentials, OAuthCredentials) else 0
        tokens.add_metric([], fetches)
        yield tokens

        unknown = CounterMetricFamily(
            "gateway_upstream_unknown_values",
            "Upstream values the gateway does not know (new portals, statuses, features).",
            labels=["kind", "value"],
        )
        for (kind, value), count in list(UNKNOWN_VALUES.items()):
            unknown.add_metric([kind, value], count)
        yield unknown


class RedisCollector:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        link = self._runtime.redis
        if link is None:
            return
        # Loaded only with Redis configured (redis-py is slow to import).
        from gateway.cache.shared import SharedPageCache
        from gateway.live.redis_bus import RedisEventBus

        up = GaugeMetricFamily("gateway_redis_up", "1 while Redis answers, 0 while degraded.")
        up.add_metric([], 1.0 if link.state == "ok" else 0.0)
        yield up
        for name, doc, value in (
            ("degraded", "Times Redis became unavailable (sharing paused).", link.stats.degraded),
            (
                "recovered",
                "Times Redis answered again after being unavailable.",
                link.stats.recovered,
            ),
            ("failures", "Redis calls that failed.", link.stats.failures),
            ("skipped", "Redis calls not tried while resting after a failure.", link.stats.skipped),
        ):
            counter = CounterMetricFamily(f"gateway_redis_{name}", doc)
            counter.add_metric([], value)
            yield counter
        cache = self._runtime.service.cache
        if isinstance(cache, SharedPageCache):
            yield _events(
                "gateway_shared_cache_events",
                "V3 pages in Redis (hits, misses, stored, unavailable).",
                cache.shared,
            )
        bus = self._runtime.events
        if isinstance(bus, RedisEventBus):
            yield _events(
                "gateway_shared_bus_events",
                "Webhook events through Redis (sent, received, duplicates, alone).",
                bus.shared,
            )
        credentials = self._runtime.upstreams.v3.credentials
        if isinstance(credentials, OAuthCredentials):
            tokens = CounterMetricFamily(
                "gateway_v3_tokens_shared",
                "V3 tokens taken from Redis instead of the token endpoint.",
            )
            tokens.add_metric([], credentials.shared_count)
            yield tokens


def _events(name: str, doc: str, stats: object) -> Metric:
    family = CounterMetricFamily(name, doc, labels=["event"])
    assert dataclasses.is_dataclass(stats) and not isinstance(stats, type)
    for event, count in dataclasses.asdict(stats).items():
        family.add_metric([event], float(count))
    return family
