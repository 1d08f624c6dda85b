"""Admission control: a limit on requests at once that finds itself, a short queue, one
budget per process shared by both edges.

Past `limit` running requests, up to `max_queued` more wait at most `queue_timeout_s` for a
turn; anything beyond is refused at once with `Overloaded`. This keeps the latency of
admitted requests bounded and keeps the event loop free enough to honour upstream
deadlines, instead of letting every request slow down together until callers time out.
`/graphql` HTTP requests (the `Admission` middleware of `gateway.http.admission`: HTTP 503,
`Retry-After`, the GraphQL error `OVERLOADED`) and unary gRPC calls
(`gateway.grpc.admission`: RESOURCE_EXHAUSTED) take their turns from the same
`AdmissionControl`. Long-lived streams (GraphQL WebSocket subscriptions, the gRPC watch
stream) and the other routes are not admitted: they mostly wait, and would hold a turn for
as long as they stay open.

The limit is not a number a person tunes. A request mostly waits on upstreams, so what
running more of them at once costs is CPU. A probe (`watch`) reads, every tenth of a second,
how late a short sleep woke up (event-loop lag) and what share of a core the process used
since the last probe, and hands both to `AdaptiveLimit`: while the loop keeps up, the core
has room and the limit is being used, the limit grows; once the lag passes its target it is
cut by a fifth (additive increase, multiplicative decrease, as TCP's congestion window and
Netflix's concurrency limits do). A core that is nearly full stops the growth: past that
knee more requests at once only wait longer for the same CPU, and lag alone misses a loop
that is busy in many short steps (parsing one page at a time keeps the lag small while the
core is full). Light I/O-bound requests so get a high limit and heavy CPU-bound ones a low
one, between a floor and a ceiling (`GATEWAY_MIN_CONCURRENT_REQUESTS`,
`GATEWAY_MAX_CONCURRENT_REQUESTS`).
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from typing import Final

from gateway.domain.errors import Overloaded
from gateway.observability.metrics import Metrics
from gateway.observability.record import current_record

__all__ = ["OVERLOADED_MESSAGE", "AdaptiveLimit", "AdmissionControl"]

OVERLOADED_MESSAGE: Final = "The gateway is at capacity; retry shortly."
# Where the limit starts, within its floor and ceiling: enough for a burst of light
# requests before the first probe has spoken.
INITIAL_LIMIT: Final = 16
# The limit is cut to this share of itself when the loop lags past its target.
DECREASE: Final = 0.8
# Share of one core under which there is room for more requests (the limit may grow).
CPU_ROOM: Final = 0.75


class AdaptiveLimit:
    """How many requests may run at once, moved by what the event loop's lag and the
    process's CPU share say.

    `update(lag_s, saturated, cpu_share)` is called once per probe: past `lag_target_s` the
    limit is cut by a fifth (never below `floor`); under half the target with the core under
    `CPU_ROOM`, and only if the limit was reached since the last probe (else there is no
    evidence that more would help), it grows by the square root of itself (never above
    `ceiling`); otherwise it holds.
    """

    def __init__(self, *, floor: int, ceiling: int, lag_target_s: float) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.lag_target_s = lag_target_s
        self._value = float(min(self.ceiling, max(self.floor, INITIAL_LIMIT)))

    @property
    def value(self) -> int:
        return int(self._value)

    def update(self, lag_s: float, *, saturated: bool, cpu_share: float = 0.0) -> int:
        if lag_s > self.lag_target_s:
            self._value = max(float(self.floor), self._value * DECREASE)
        elif saturated and lag_s < self.lag_target_s / 2 and cpu_share < CPU_ROOM:
            self._value = min(float(self.ceiling), self._value + math.sqrt(self._value))
        return self.value


class AdmissionControl:
    """The process's request budget: `enter` before the work, `leave` after it."""

    def __init__(
        self,
        *,
        max_concurrent: int,
        max_queued: int,
        queue_timeout_s: float,
        metrics: Metrics,
        min_concurrent: int | None = None,
        lag_target_s: float = 0.02,
    ) -> None:
        self.limit = AdaptiveLimit(
            floor=max_concurrent if min_concurrent is None else min_concurrent,
            ceiling=max_concurrent,
            lag_target_s=lag_target_s,
        )
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.metrics = metrics
        self.running = 0
        # Whether the limit was reached since the last probe: growing needs that evidence.
        self._saturated = False
        # What a refused caller is told to wait, in whole seconds: a queue turn's length.
        self.retry_after = max(1, math.ceil(queue_timeout_s))
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Read when scraped: a request sets no gauge.
        metrics.watch_admission(lambda: (self.running, len(self._waiters), self.limit.value))

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def enter(self) -> None:
        """Take a turn, waiting in the queue if need be; `Overloaded` when refused (the
        current request's outcome is then `overloaded`). Pair with `leave`."""
        if self.running < self.limit.value and not self._waiters:
            self.running += 1
            return
        self._saturated = True
        if len(self._waiters) >= self.max_queued:
            raise self._refused("queue_full")
        if not await self._wait_for_turn():
            raise self._refused("queue_timeout")

    def leave(self) -> None:
        self.running -= 1
        self._admit_waiting()

    def adjust(self, lag_s: float, cpu_share: float = 0.0) -> None:
        """One probe's measures (event-loop lag, share of a core used since the last probe):
        move the limit, and let waiting requests in if it grew."""
        saturated = self._saturated or self.running >= self.limit.value
        self._saturated = False
        self.limit.update(lag_s, saturated=saturated, cpu_share=cpu_share)
        self._admit_waiting()

    async def watch(self, interval_s: float) -> None:
        """Probe every `interval_s` and `adjust`, until cancelled."""
        loop = asyncio.get_running_loop()
        cpu = time.process_time()
        while True:
            started = loop.time()
            await asyncio.sleep(interval_s)
            now = loop.time()
            cpu_now = time.process_time()
            share = (cpu_now - cpu) / max(now - started, 1e-9)
            cpu = cpu_now
            self.adjust(max(0.0, now - started - interval_s), share)

    def _admit_waiting(self) -> None:
        # A turn passes straight to the next waiter: `running` counts it from here on.
        while self._waiters and self.running < self.limit.value:
            waiter = self._waiters.popleft()
            if waiter.done():  # gave up (timeout or cancelled) and was not yet removed
                continue
            self.running += 1
            waiter.set_result(None)

    async def _wait_for_turn(self) -> bool:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter
        except TimeoutError:
            # The turn may have come just as the time ran out: then it is taken.
            return waiter.done() and not waiter.cancelled()
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # the turn was given just as the caller went away
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def _refused(self, reason: str) -> Overloaded:
        self.metrics.admission_refused.labels(reason).inc()
        record = current_record.get()
        if record is not None:
            record.outcome = "overloaded"
        return Overloaded(OVERLOADED_MESSAGE, retry_after=self.retry_after, reason=reason)
