"""Prometheus series of the Redis sharing (only when `GATEWAY_REDIS_URL` is set).

Read at scrape time from what the link, the shared cache, the bus and the V3 credentials
count anyway. `gateway_redis_degraded_total` counts each time Redis became unavailable,
`gateway_redis_up` says whether it answers now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.runtime import Runtime
from gateway.upstreams import OAuthCredentials


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
