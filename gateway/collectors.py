"""Prometheus collectors that read the runtime at scrape time.

They sit beside the composition root because they read what it assembled (upstream guards,
the page cache, the Redis link, the shared bus, the V3 credentials), which the metrics
package itself must not import: every layer imports observability. Nothing here is counted
per request; each value is one the runtime keeps anyway.

`RuntimeCollector`: breaker states, upstream calls in flight, cache events, token fetches,
unknown upstream values, listing changes and the legacy poller. `RedisCollector` (only when `GATEWAY_REDIS_URL` is set):
`gateway_redis_degraded_total` counts each time Redis became unavailable, `gateway_redis_up`
says whether it answers now, and the shared cache, bus, change log and token counters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.live.changelog import LocalChangeLog
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
        yield from self._changes()

    def _changes(self) -> Iterator[Metric]:
        feed, poller = self._runtime.changes, self._runtime.poller
        yield _events(
            "gateway_listing_changes",
            "Listing changes: V3 events looked at and those that changed a portal, changes "
            "delivered live and replayed after a cursor, cursors refused as expired, "
            "subscriptions that fell behind and caught up from the log.",
            feed.stats,
        )
        yield _events(
            "gateway_legacy_poller",
            "Legacy polling of watched ads: polls (one POST /status/ batch per user), first "
            "snapshots, failed polls, users deferred (Retry-After, breaker), changes found.",
            poller.stats,
        )
        for name, doc, value in (
            (
                "gateway_change_subscribers",
                "listingChanged subscriptions and WatchListings streams open.",
                len(feed.subscribers),
            ),
            ("gateway_legacy_watched_ads", "Legacy ads watched in this process.", poller.watched),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], float(value))
            yield gauge
        if isinstance(feed.log, LocalChangeLog):
            entries = GaugeMetricFamily(
                "gateway_change_log_entries", "Listing changes kept in this process's log."
            )
            entries.add_metric([], float(len(feed.log)))
            yield entries


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
        from gateway.live.redis_changelog import RedisChangeLog
        from gateway.live.redis_poller import RedisPollShare

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
            (
                "skipped",
                "Redis calls not tried while Redis was unavailable.",
                link.stats.skipped,
            ),
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
        log = self._runtime.changes.log
        if isinstance(log, RedisChangeLog):
            yield _events(
                "gateway_shared_change_log_events",
                "Listing changes through the Redis stream (sent, received, alone).",
                log.shared,
            )
        share = self._runtime.poller.share
        if isinstance(share, RedisPollShare):
            leases = GaugeMetricFamily(
                "gateway_legacy_poll_leases",
                "Legacy users this replica polls (it holds their lease).",
            )
            leases.add_metric([], float(len(share.held)))
            yield leases
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
