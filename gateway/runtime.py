"""Composition root: the upstream clients, cache, service and event bus built from `Settings`.

The HTTP app's lifespan opens one `Runtime` and shares it, so every edge uses the
same sessions, cache and loaders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from gateway.cache import PageCache
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.events import EventBus, LocalEventBus
from gateway.models import Caller
from gateway.service import ListingService
from gateway.upstreams import UpstreamObserver, Upstreams, open_upstreams
from gateway.webhooks import Webhooks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    service: ListingService
    upstreams: Upstreams
    events: EventBus
    webhooks: Webhooks

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
    async with open_upstreams(settings, observer=observer, tracer=tracer, clock=clock) as upstreams:
        cache: PageCache[Any] = PageCache(
            ttl_s=settings.cache_ttl_s,
            max_entries=settings.cache_max_entries,
            stale_s=settings.cache_stale_s,
            timer=clock,
        )
        service = ListingService(
            v3=upstreams.v3,
            legacy=upstreams.legacy,
            cache=cache,
            tenant_of=upstreams.v3.tenant,
            max_listings=settings.max_listings,
        )
        events = LocalEventBus(max_queue=settings.event_queue_size)
        webhooks = Webhooks(
            v3=upstreams.v3,
            service=service,
            events=events,
            public_url=settings.public_url,
            secret=settings.webhook_secret.get_secret_value(),
            dedup_window=settings.webhook_dedup_window,
        )
        subscribed = settings.webhook_subscribe and await _subscribe(webhooks)
        try:
            yield Runtime(service, upstreams, events, webhooks)
        finally:
            if subscribed:
                await _unsubscribe(webhooks)


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
