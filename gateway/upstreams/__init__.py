"""Clients for the two upstream status APIs, and how to build them from plain options.

    async with open_upstreams(options) as upstreams:
        page = await upstreams.v3.classified_statuses(Caller(), classified_id)
        batch = await upstreams.legacy.ads_status(user_id, ad_ids)

`open_upstreams` opens one pooled session per upstream and closes them on exit; use it in
the application lifespan. The options are plain values: the composition root
(`gateway.runtime.upstream_options`) reads them from the settings, so nothing here knows
how the gateway is configured. The pieces (`create_session`, `build_credentials`, the client
classes) are public too, for tests and for other wiring. Each client module parses its
wire format into `gateway.domain.models`; `_http` is the only place connection errors are caught.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from opentelemetry import trace
from pydantic import SecretStr

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
    V3AuthOptions,
    V3Credentials,
    build_credentials,
)
from gateway.upstreams.wire import Pool

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
    "UpstreamOptions",
    "Upstreams",
    "V3AuthOptions",
    "V3Credentials",
    "build_credentials",
    "child_traceparent",
    "create_session",
    "open_upstreams",
]

# Connections per upstream when not given: as many as calls may be in flight to it (the
# guard's cap), so that no call holding a slot waits for a connection.
DEFAULT_POOL_LIMIT = 100


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """Where the upstreams are and how to call them: plain values, no settings object."""

    v3_url: str
    legacy_url: str
    legacy_api_key: SecretStr
    v3_auth: V3AuthOptions
    user_agent: str
    timeout_s: float = 5.0
    legacy_max_batch: int = 100
    retries: int = 2
    backoff_s: float = 0.1
    breaker_failures: int = 5
    breaker_reset_s: float = 10.0
    retry_budget_ratio: float = 0.2
    max_concurrency: int = 64


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Both clients, ready to use while `open_upstreams` is entered."""

    v3: ClassifiedsV3Client
    legacy: LegacyClient
    sessions: tuple[Pool, ...]
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
    options: UpstreamOptions,
    *,
    pool_limit: int | None = None,
    observer: UpstreamObserver | None = None,
    tracer: trace.Tracer | None = None,
    clock: Callable[[], float] = time.monotonic,
    token_store: TokenStore | None = None,
) -> AsyncIterator[Upstreams]:
    """Open both upstream sessions and clients from `options`; close everything on exit.

    Each upstream gets its own `UpstreamGuard` (breaker, retry budget, concurrency cap)
    reporting to `observer` and `tracer`; `clock` drives the breakers (tests inject one);
    `token_store` shares V3 OAuth tokens with other replicas.
    """
    v3_guard, legacy_guard = (
        UpstreamGuard(
            upstream,
            failure_threshold=options.breaker_failures,
            reset_after_s=options.breaker_reset_s,
            retry_ratio=options.retry_budget_ratio,
            max_concurrency=options.max_concurrency,
            observer=observer,
            tracer=tracer,
            clock=clock,
        )
        for upstream in ("classifieds-v3", "legacy")
    )
    if pool_limit is None:
        pool_limit = max(DEFAULT_POOL_LIMIT, options.max_concurrency)
    # Every call names the gateway: V3's edge refuses calls without a User-Agent, and the
    # V3 token endpoint and the legacy API are told who calls too.
    named = {"User-Agent": options.user_agent}
    async with AsyncExitStack() as stack:
        v3_session = create_session(timeout_s=options.timeout_s, limit=pool_limit, headers=named)
        stack.push_async_callback(v3_session.close)
        # force=true legacy reads get three times the budget; the session must allow it.
        legacy_session = create_session(
            timeout_s=options.timeout_s * 3, limit=pool_limit, headers=named
        )
        stack.push_async_callback(legacy_session.close)
        retry_policy = RetryPolicy(max_retries=options.retries, backoff_s=options.backoff_s)
        credentials = build_credentials(
            options.v3_auth,
            v3_session,
            guard=v3_guard,
            retry_policy=retry_policy,
            token_store=token_store,
        )
        if isinstance(credentials, OAuthCredentials):
            # Runs before the session closes (callbacks unwind in reverse order).
            stack.push_async_callback(credentials.aclose)
        yield Upstreams(
            v3=ClassifiedsV3Client(
                v3_session,
                options.v3_url,
                credentials,
                options.user_agent,
                options.timeout_s,
                guard=v3_guard,
                retry_policy=retry_policy,
            ),
            legacy=LegacyClient(
                legacy_session,
                options.legacy_url,
                options.legacy_api_key,
                options.timeout_s,
                options.legacy_max_batch,
                guard=legacy_guard,
                retry_policy=retry_policy,
            ),
            sessions=(v3_session, legacy_session),
            guards=(v3_guard, legacy_guard),
        )
