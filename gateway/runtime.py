"""Composition root: the upstream clients, cache, service, event bus and change feed built
from `Settings`.

The HTTP app's lifespan opens one `Runtime` and shares it, so every edge uses the
same sessions, caches and loaders. With `GATEWAY_REDIS_URL`, the page cache, the legacy
status cache, the event bus, the change log, the legacy poller's lease and the V3 tokens are
the Redis-backed ones
(docs/operating.md, "Several replicas").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from gateway.cache.legacy import LegacyStatusCache
from gateway.cache.pages import PageCache
from gateway.config import Settings
from gateway.domain.errors import GatewayError
from gateway.domain.models import Caller
from gateway.live.bus import EventBus, LocalEventBus
from gateway.live.changelog import ChangeLog, LocalChangeLog
from gateway.live.changes import ChangeFeed, LocalV3Marks, V3Marks
from gateway.live.poller import LegacyPoller, LocalPollShare, PollShare, WatchRegistry
from gateway.live.webhooks import Webhooks
from gateway.service.listings import ListingService
from gateway.upstreams import (
    UpstreamObserver,
    UpstreamOptions,
    Upstreams,
    V3AuthOptions,
    open_upstreams,
)

if TYPE_CHECKING:
    # redis-py takes a third of a second to import; it is loaded only when Redis is set.
    from gateway.infra.redis_link import RedisLink
    from gateway.live.redis_bus import RedisEventBus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    service: ListingService
    upstreams: Upstreams
    events: EventBus
    webhooks: Webhooks
    changes: ChangeFeed
    poller: LegacyPoller
    redis: RedisLink | None = None

    @property
    def redis_state(self) -> str:
        """`off` (no GATEWAY_REDIS_URL), `ok`, or `degraded` (serving without sharing)."""
        return "off" if self.redis is None else self.redis.state

    @property
    def ready(self) -> bool:
        return not self.not_ready_because()

    def not_ready_because(self) -> list[str]:
        """Why this replica should get no traffic now; empty when it is ready."""
        reasons: list[str] = []
        if not self.upstreams.open:
            reasons.append("upstream sessions closed")
        open_circuits = self.upstreams.open_circuits()
        if open_circuits and len(open_circuits) == len(self.upstreams.guards):
            reasons.append("circuit open for every upstream: " + ", ".join(open_circuits))
        return reasons


def v3_auth_options(settings: Settings) -> V3AuthOptions:
    """How V3 calls authenticate, as the settings say."""
    return V3AuthOptions(
        mode=settings.v3_auth.value,
        token_url=settings.v3_token_url,
        client_id=settings.v3_client_id,
        client_secret=settings.v3_client_secret,
        audience=settings.v3_audience,
        intermediary_id=settings.v3_intermediary_id,
        agencies=settings.v3_agencies,
        token=settings.v3_token,
        user_agent=settings.user_agent,
        timeout_s=settings.upstream_timeout_s,
    )


def upstream_options(settings: Settings) -> UpstreamOptions:
    """The upstream clients' options, as the settings say."""
    return UpstreamOptions(
        v3_url=settings.v3_url,
        legacy_url=settings.legacy_url,
        legacy_api_key=settings.legacy_api_key,
        v3_auth=v3_auth_options(settings),
        user_agent=settings.user_agent,
        timeout_s=settings.upstream_timeout_s,
        legacy_max_batch=settings.legacy_max_batch,
        retries=settings.upstream_retries,
        backoff_s=settings.upstream_backoff_s,
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_s,
        retry_budget_ratio=settings.retry_budget_ratio,
        max_concurrency=settings.upstream_max_concurrency,
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    observer: UpstreamObserver | None = None,
    tracer: trace.Tracer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Runtime]:
    """Open the upstream sessions for the lifetime of the block.

    `observer` and `tracer` watch every upstream call; `clock` drives the circuit breakers
    and the page cache's TTLs.
    """
    async with AsyncExitStack() as stack:
        link = None
        token_store = None
        if settings.redis_url:
            from gateway.infra.redis_link import RedisLink
            from gateway.upstreams.shared_tokens import RedisTokenStore

            link = RedisLink(settings.redis_url, op_timeout_s=settings.redis_timeout_s)
            stack.push_async_callback(link.aclose)
            token_store = RedisTokenStore(link)
        upstreams = await stack.enter_async_context(
            open_upstreams(
                upstream_options(settings),
                observer=observer,
                tracer=tracer,
                clock=clock,
                token_store=token_store,
            )
        )
        cache: PageCache[Any]
        if link is not None and settings.cache_ttl_s > 0:
            from gateway.cache.shared import SharedPageCache

            cache = SharedPageCache(
                link,
                ttl_s=settings.cache_ttl_s,
                max_local_entries=settings.cache_max_entries,
                stale_s=settings.cache_stale_s,
                lock_s=settings.upstream_timeout_s,
                timer=clock,
            )
            stack.push_async_callback(cache.aclose)
        else:
            cache = PageCache(
                ttl_s=settings.cache_ttl_s,
                max_entries=settings.cache_max_entries,
                stale_s=settings.cache_stale_s,
                timer=clock,
            )
        legacy = _legacy_cache(settings, link, upstreams, clock)
        service = ListingService(
            v3=upstreams.v3,
            legacy=legacy,
            cache=cache,
            tenant_of=upstreams.v3.tenant,
            max_listings=settings.max_listings,
            max_upstream_cost=settings.max_upstream_cost,
        )
        local = LocalEventBus(
            max_queue=settings.event_queue_size, max_subscribers=settings.max_subscriptions
        )
        events: EventBus = local
        if link is not None:
            events = await stack.enter_async_context(_shared_bus(link, local, cache))
        changes = await stack.enter_async_context(_change_feed(settings, link, local, cache))
        # The poller reads through the legacy cache: what it reads replaces the entries of
        # the ads it polls, so a board watching them is served fresh answers without reads.
        poller = LegacyPoller(
            legacy,
            changes.watches,
            _poll_share(settings, link),
            changes.append,
            interval_s=settings.legacy_poll_s,
        )
        poller.start()
        stack.push_async_callback(poller.aclose)
        webhooks = Webhooks(
            v3=upstreams.v3,
            service=service,
            events=events,
            public_url=settings.public_url,
            secret=settings.webhook_secret.get_secret_value(),
            dedup_window=settings.webhook_dedup_window,
            changes=changes,
        )
        subscribed = settings.webhook_subscribe and await _subscribe(webhooks)
        try:
            yield Runtime(
                service=service,
                upstreams=upstreams,
                events=events,
                webhooks=webhooks,
                changes=changes,
                poller=poller,
                redis=link,
            )
        finally:
            if subscribed:
                await _unsubscribe(webhooks)


async def _first_attempt(link: RedisLink, tried: asyncio.Event) -> None:
    """Wait until a Redis listener's first attempt has ended, subscribed or not: a Redis that
    is away must not hold up the start (the listener keeps trying in the background)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(link.op_timeout_s * 4):
            await tried.wait()


@asynccontextmanager
async def _shared_bus(
    link: RedisLink, local: LocalEventBus, cache: PageCache[Any]
) -> AsyncIterator[RedisEventBus]:
    from gateway.cache.shared import SharedPageCache
    from gateway.live.redis_bus import RedisEventBus

    bus = RedisEventBus(
        link, local=local, cache=cache if isinstance(cache, SharedPageCache) else None
    )
    bus.start()
    await _first_attempt(link, bus.tried)
    try:
        yield bus
    finally:
        await bus.aclose()


@asynccontextmanager
async def _change_feed(
    settings: Settings, link: RedisLink | None, local: LocalEventBus, cache: PageCache[Any]
) -> AsyncIterator[ChangeFeed]:
    """The change feed over the shared log (with Redis) or this process's own."""
    log: ChangeLog
    marks: V3Marks = LocalV3Marks()
    tried: asyncio.Event | None = None
    if link is None:
        log = LocalChangeLog(
            retention_s=settings.event_retention_s, max_entries=settings.event_log_max_entries
        )
    else:
        from gateway.cache.shared import SharedPageCache
        from gateway.live.redis_changelog import RedisChangeLog, RedisV3Marks

        shared = RedisChangeLog(
            link,
            retention_s=settings.event_retention_s,
            max_entries=settings.event_log_max_entries,
            cache=cache if isinstance(cache, SharedPageCache) else None,
        )
        log, tried = shared, shared.tried
        marks = RedisV3Marks(link, fallback=marks)
    # Every subscription counts against GATEWAY_MAX_SUBSCRIPTIONS, with the bus's own.
    feed = ChangeFeed(
        log,
        reserve=local.reserve,
        watches=WatchRegistry(),
        marks=marks,
        max_queue=settings.event_queue_size,
    )
    # When the event listener has just found Redis away, the reader does not get a second
    # timeout to find the same.
    if link is not None and tried is not None and link.state == "ok":
        await _first_attempt(link, tried)
    try:
        yield feed
    finally:
        await feed.aclose()


def _legacy_cache(
    settings: Settings, link: RedisLink | None, upstreams: Upstreams, clock: Callable[[], float]
) -> LegacyStatusCache:
    """Legacy answers shared by this process's requests, and with Redis by every replica's."""
    if link is None or settings.legacy_cache_ttl_s <= 0:
        return LegacyStatusCache(
            upstreams.legacy,
            ttl_s=settings.legacy_cache_ttl_s,
            max_entries=settings.legacy_cache_max_entries,
            timer=clock,
        )
    from gateway.cache.shared_legacy import SharedLegacyStatusCache

    return SharedLegacyStatusCache(
        upstreams.legacy,
        link,
        scope=upstreams.legacy.scope,
        ttl_s=settings.legacy_cache_ttl_s,
        max_entries=settings.legacy_cache_max_entries,
        lock_s=settings.upstream_timeout_s,
        timer=clock,
    )


def _poll_share(settings: Settings, link: RedisLink | None) -> PollShare:
    """Who polls which legacy user: this process alone, or one replica per user (Redis)."""
    if link is None:
        return LocalPollShare(retention_s=settings.event_retention_s)
    from gateway.live.redis_poller import RedisPollShare

    return RedisPollShare(
        link, interval_s=settings.legacy_poll_s, retention_s=settings.event_retention_s
    )


async def _subscribe(webhooks: Webhooks) -> bool:
    # A V3 that cannot take the subscription now must not stop the gateway from serving
    # queries; the mutation can subscribe later.
    try:
        registration = await webhooks.subscribe_at_start()
    except GatewayError as exc:
        log.warning("could not subscribe to V3 status callbacks at start: %s", exc.message)
        return False
    log.info("subscribed %s to V3 status callbacks", registration.url)
    return True


async def _unsubscribe(webhooks: Webhooks) -> None:
    try:
        await webhooks.unsubscribe(Caller())
    except GatewayError as exc:
        log.warning("could not unsubscribe from V3 status callbacks: %s", exc.message)
    else:
        log.info("unsubscribed from V3 status callbacks")
