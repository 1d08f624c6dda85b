"""Clients for the two upstream status APIs, and how to build them from `Settings`.

    async with open_upstreams(settings) as upstreams:
        page = await upstreams.v3.classified_statuses(Caller(), classified_id)
        batch = await upstreams.legacy.ads_status(user_id, ad_ids)

`open_upstreams` opens one pooled session per upstream and closes them on exit; use it in
the application lifespan. The pieces (`create_session`, `build_credentials`, the client
classes) are public too, for tests and for other wiring. Each client module parses its
wire format into `gateway.domain.models`; `_http` is the only place aiohttp errors are caught.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from opentelemetry import trace

from gateway.config import Settings
from gateway.upstreams._http import Deadline, RetryPolicy, create_session
from gateway.upstreams.breaker import BreakerState
from gateway.upstreams.guard import UpstreamGuard, UpstreamObserver
from gateway.upstreams.legacy import LegacyClient
from gateway.upstreams.trace import child_traceparent
from gateway.upstreams.unknowns import UNKNOWN_VALUES
from gateway.upstreams.v3 import ClassifiedsV3Client
from gateway.upstreams.v3_auth import (
    OAuthCredentials,
    PassthroughCredentials,
    StaticCredentials,
    TokenStore,
    V3Credentials,
    build_credentials,
)

__all__ = [
    "UNKNOWN_VALUES",
    "BreakerState",
    "ClassifiedsV3Client",
    "Deadline",
    "LegacyClient",
    "OAuthCredentials",
    "PassthroughCredentials",
    "RetryPolicy",
    "StaticCredentials",
    "TokenStore",
    "UpstreamGuard",
    "UpstreamObserver",
    "Upstreams",
    "V3Credentials",
    "build_credentials",
    "child_traceparent",
    "create_session",
    "open_upstreams",
]

# Connections per upstream; the legacy API is called in parallel chunks.
DEFAULT_POOL_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Both clients, ready to use while `open_upstreams` is entered."""

    v3: ClassifiedsV3Client
    legacy: LegacyClient
    sessions: tuple[aiohttp.ClientSession, ...]
    guards: tuple[UpstreamGuard, ...] = ()

    @property
    def open(self) -> bool:
        """True while every upstream session is open (the readiness check)."""
        return all(not session.closed for session in self.sessions)

    def open_circuits(self) -> list[str]:
        """The upstreams whose circuit breaker is open now."""
        return [g.upstream for g in self.guards if g.breaker.state is BreakerState.OPEN]


@asynccontextmanager
async def open_upstreams(
    settings: Settings,
    *,
    pool_limit: int = DEFAULT_POOL_LIMIT,
    observer: UpstreamObserver | None = None,
    tracer: trace.Tracer | None = None,
    clock: Callable[[], float] = time.monotonic,
    token_store: TokenStore | None = None,
) -> AsyncIterator[Upstreams]:
    """Open both upstream sessions and clients from `settings`; close everything on exit.

    Each upstream gets its own `UpstreamGuard` (breaker, retry budget, concurrency cap)
    reporting to `observer` and `tracer`; `clock` drives the breakers (tests inject one);
    `token_store` shares V3 OAuth tokens with other replicas.
    """
    v3_guard, legacy_guard = (
        UpstreamGuard(
            upstream,
            failure_threshold=settings.breaker_failures,
            reset_after_s=settings.breaker_reset_s,
            retry_ratio=settings.retry_budget_ratio,
            max_concurrency=settings.upstream_max_concurrency,
            observer=observer,
            tracer=tracer,
            clock=clock,
        )
        for upstream in ("classifieds-v3", "legacy")
    )
    async with AsyncExitStack() as stack:
        v3_session = create_session(timeout_s=settings.upstream_timeout_s, limit=pool_limit)
        stack.push_async_callback(v3_session.close)
        # force=true legacy reads get three times the budget; the session must allow it.
        legacy_session = create_session(timeout_s=settings.upstream_timeout_s * 3, limit=pool_limit)
        stack.push_async_callback(legacy_session.close)
        retry_policy = RetryPolicy(
            max_retries=settings.upstream_retries, backoff_s=settings.upstream_backoff_s
        )
        credentials = build_credentials(
            settings, v3_session, guard=v3_guard, retry_policy=retry_policy, token_store=token_store
        )
        if isinstance(credentials, OAuthCredentials):
            # Runs before the session closes (callbacks unwind in reverse order).
            stack.push_async_callback(credentials.aclose)
        yield Upstreams(
            v3=ClassifiedsV3Client(
                v3_session,
                settings.v3_url,
                credentials,
                settings.user_agent,
                settings.upstream_timeout_s,
                guard=v3_guard,
                retry_policy=retry_policy,
            ),
            legacy=LegacyClient(
                legacy_session,
                settings.legacy_url,
                settings.legacy_api_key,
                settings.upstream_timeout_s,
                settings.legacy_max_batch,
                guard=legacy_guard,
                retry_policy=retry_policy,
            ),
            sessions=(v3_session, legacy_session),
            guards=(v3_guard, legacy_guard),
        )
