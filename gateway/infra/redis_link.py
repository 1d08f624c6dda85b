"""The process's link to Redis, and whether Redis answers now.

Everything shared across replicas (the V3 page cache, the event fan-out, the V3 tokens)
goes through one `RedisLink`. Redis is an optimisation, never a dependency of an answer:
`run()` raises `RedisDown` when Redis fails or is resting after a failure, and every caller
then carries on alone (upstreams, the in-process cache, the local event bus).

After a failure the link is *degraded*: it lets a call through again only after a backoff
(doubling up to `backoff_max_s`), and only one at a time (the probe: calls made while it
runs are skipped), so a Redis that is away or silent costs one failure per backoff, not a
timeout per request. The first call that succeeds again ends the degraded state and runs
the `on_recovered` callbacks (what a replica may have missed while alone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RedisDown(Exception):
    """Redis did not answer (or is resting after a failure): carry on without it."""


@dataclass(slots=True)
class RedisStats:
    """What the link saw, for `/readyz` and metrics."""

    failures: int = 0  # Redis calls that failed
    skipped: int = 0  # calls not tried while resting after a failure or while a probe runs
    degraded: int = 0  # times the link went from ok to degraded
    recovered: int = 0  # times it came back


class RedisLink:
    """One redis-py asyncio client with a degraded state and a reconnect backoff."""

    def __init__(
        self,
        url: str,
        *,
        op_timeout_s: float = 0.5,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        prefix: str = "gateway:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.op_timeout_s = op_timeout_s
        # No retries inside redis-py: the link's own backoff decides when to try again.
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=op_timeout_s,
            socket_connect_timeout=op_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.stats = RedisStats()
        self._clock = clock
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._resting_until: float | None = None  # set while degraded
        self._probing = False  # a call is trying Redis again while degraded
        self._on_recovered: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"RedisLink(state={self.state!r})"

    @property
    def state(self) -> str:
        """`ok`, or `degraded` after a failure until a call succeeds again."""
        return "ok" if self._resting_until is None else "degraded"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def on_recovered(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time Redis answers again after a failure."""
        self._on_recovered.append(callback)

    async def run(self, action: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """`action(client)`, or `RedisDown` if Redis fails, is resting after a failure, or
        is being probed by another call."""
        if self._resting_until is None:
            return await self._attempt(action)
        if self._probing or self._clock() < self._resting_until:
            self.stats.skipped += 1
            raise RedisDown("resting after a failure")
        # Degraded: this call is the probe. The calls made while it waits for an answer (or
        # for the timeout, from a Redis that accepts and never answers) do not wait too.
        self._probing = True
        try:
            return await self._attempt(action)
        finally:
            self._probing = False

    async def _attempt(self, action: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        try:
            result = await action(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(exc)
            raise RedisDown(str(exc)) from exc
        self.succeeded()
        return result

    def failed(self, exc: BaseException) -> None:
        """Count a failure and rest for the backoff (also for calls made outside `run`)."""
        self.stats.failures += 1
        if self._resting_until is None:
            self.stats.degraded += 1
            self._backoff_s = self._backoff_initial_s
            log.warning("Redis is unavailable (%s): carrying on without sharing", exc)
        else:
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
        self._resting_until = self._clock() + self._backoff_s

    def succeeded(self) -> None:
        if self._resting_until is None:
            return
        self._resting_until = None
        self._backoff_s = self._backoff_initial_s
        self.stats.recovered += 1
        log.info("Redis answers again: sharing resumes")
        for callback in self._on_recovered:
            callback()

    @property
    def backoff_s(self) -> float:
        """How long the link rests after the next failure (for reconnect loops)."""
        return self._backoff_s

    async def aclose(self) -> None:
        await self.client.aclose()
