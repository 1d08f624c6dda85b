"""Composition root: the upstream clients, cache, service and event bus built from `Settings`.

The HTTP app's lifespan opens one `Runtime` and shares it, so every edge uses the
same sessions, cache and loaders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gateway.cache import PageCache
from gateway.config import Settings
from gateway.events import EventBus, LocalEventBus
from gateway.service import ListingService
from gateway.upstreams import Upstreams, open_upstreams


@dataclass(frozen=True, slots=True)
class Runtime:
    service: ListingService
    upstreams: Upstreams
    events: EventBus

    @property
    def ready(self) -> bool:
        return self.upstreams.open


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the upstream sessions for the lifetime of the block."""
    async with open_upstreams(settings) as upstreams:
        cache: PageCache[Any] = PageCache(
            ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries
        )
        service = ListingService(
            v3=upstreams.v3,
            legacy=upstreams.legacy,
            cache=cache,
            tenant_of=upstreams.v3.tenant,
            max_listings=settings.max_listings,
        )
        events = LocalEventBus(max_queue=settings.event_queue_size)
        yield Runtime(service, upstreams, events)
