"""The process's link to Redis, and whether Redis answers now.

Everything shared across replicas (the V3 page cache, the event fan-out, the V3 tokens)
goes through one `RedisLink`. Redis is an optimisation, never a dependency of an answer:
`run()` raises `RedisDown` when Redis fails or the link is degraded, and every caller
then carries on alone (upstreams, the in-process cache, the local event bus).

After a failure the link is *degraded*: calls are not tried (`RedisDown` at once) and a
background probe pings Redis after each backoff (doubling up to `backoff_max_s`). So no
request waits on a Redis that is away or that accepts and never answers, however long that
lasts. The first success (the probe's, or a reconnect loop's) ends the degraded state and
runs the `on_recovered` callbacks (what a replica may have missed while alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    """Redis did not answer (or the link is degraded): carry on without it."""


@dataclass(slots=True)
class RedisStats:
    """What the link saw, for `/readyz` and metrics."""

    failures: int = 0  # Redis calls that failed
    skipped: int = 0  # calls not tried while degraded
    degraded: int = 0  # times the link went from ok to degraded
    recovered: int = 0  # times it came back


def _stop_if_cancelled(task: asyncio.Task[object] | None, asked: int) -> None:
    """Raise the cancellation a Redis call swallowed.

    redis-py can catch a `CancelledError` that lands in a command and finish the command (or
    fail it as a lost connection). The task that asked to stop then ran on: a subscription
    whose client left while it read the change log waited for changes forever, and held the
    server's shutdown with it. Its cancellation request is still counted (`cancelling()`).
    """
    if task is not None and task.cancelling() > asked:
        raise asyncio.CancelledError


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
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_s = backoff_initial_s
        self._degraded = False
        self._probe: asyncio.Task[None] | None = None  # pings Redis while degraded
        self._on_recovered: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"RedisLink(state={self.state!r})"

    @property
    def state(self) -> str:
        """`ok`, or `degraded` after a failure until Redis answers again (the probe, or a
        reconnect loop)."""
        return "degraded" if self._degraded else "ok"

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def on_recovered(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time Redis answers again after a failure."""
        self._on_recovered.append(callback)

    async def run(self, action: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """`action(client)`, or `RedisDown` if Redis fails or the link is degraded."""
        if self._degraded:
            self.stats.skipped += 1
            self._start_probe()  # in case the failure was reported where no loop ran
            raise RedisDown("Redis is unavailable; a background probe tries it again")
        task = asyncio.current_task()
        asked = 0 if task is None else task.cancelling()
        try:
            result = await action(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            _stop_if_cancelled(task, asked)
            self.failed(exc)
            raise RedisDown(str(exc)) from exc
        _stop_if_cancelled(task, asked)
        self.succeeded()
        return result

    def failed(self, exc: BaseException) -> None:
        """Count a failure (also one of a call made outside `run`): the link is degraded,
        and each further failure doubles the backoff."""
        self.stats.failures += 1
        if not self._degraded:
            self._degraded = True
            self.stats.degraded += 1
            self._backoff_s = self._backoff_initial_s
            log.warning("Redis is unavailable (%s): carrying on without sharing", exc)
        else:
            self._backoff_s = min(self._backoff_s * 2, self._backoff_max_s)
        self._start_probe()

    def _start_probe(self) -> None:
        if self._probe is not None and not self._probe.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # the next call made in a loop starts it
        self._probe = loop.create_task(self._probe_until_recovered(), name="redis-probe")

    async def _probe_until_recovered(self) -> None:
        # A request never pays for finding Redis still away: this task does, once per backoff.
        while self._degraded:
            await asyncio.sleep(self._backoff_s)
            if not self._degraded:
                return  # a reconnect loop found Redis meanwhile
            try:
                await self.client.ping()
            except (RedisError, OSError, TimeoutError) as exc:
                self.failed(exc)
            else:
                self.succeeded()

    def succeeded(self) -> None:
        if not self._degraded:
            return
        self._degraded = False
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
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.client.aclose()
