"""Composition root: builds the upstream clients, cache and service from `Settings`.

The HTTP app's lifespan (and later the gRPC server) opens one `Runtime` and shares
it, so every edge uses the same sessions, cache and loaders.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.cache import PageCache
from gateway.config import Settings
from gateway.service import ListingService
from gateway.upstreams._http import create_session
from gateway.upstreams.legacy import LegacyClient
from gateway.upstreams.v3 import ClassifiedsV3Client
from gateway.upstreams.v3_auth import build_credentials


@dataclass(slots=True)
class Runtime:
    settings: Settings
    service: ListingService
    v3: ClassifiedsV3Client
    legacy: LegacyClient
    sessions: tuple[aiohttp.ClientSession, ...]

    @property
    def ready(self) -> bool:
        return all(not session.closed for session in self.sessions)


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open one pooled session per upstream, and close them on exit."""
    v3_session = create_session(timeout_s=settings.upstream_timeout_s * 3)
    legacy_session = create_session(timeout_s=settings.upstream_timeout_s * 3)
    try:
        v3 = ClassifiedsV3Client(
            v3_session,
            settings.v3_url,
            build_credentials(settings, v3_session),
            settings.user_agent,
            settings.upstream_timeout_s,
        )
        legacy = LegacyClient(
            legacy_session,
            settings.legacy_url,
            settings.legacy_api_key,
            settings.upstream_timeout_s,
            settings.legacy_max_batch,
        )
        cache: PageCache[Any] = PageCache(
            ttl_s=settings.cache_ttl_s, max_entries=settings.cache_max_entries
        )
        service = ListingService(
            v3=v3,
            legacy=legacy,
            cache=cache,
            tenant_of=v3.tenant,
            max_listings=settings.max_listings,
        )
        yield Runtime(settings, service, v3, legacy, (v3_session, legacy_session))
    finally:
        await v3_session.close()
        await legacy_session.close()
