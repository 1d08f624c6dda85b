"""Admission control: a bounded number of requests at once, a short queue, one budget per
process shared by both edges.

Past `max_concurrent` running requests, up to `max_queued` more wait at most
`queue_timeout_s` for a turn; anything beyond is refused at once with `Overloaded`. This
keeps the latency of admitted requests bounded and keeps the event loop free enough to
honour upstream deadlines, instead of letting every request slow down together until
callers time out. `/graphql` HTTP requests (the `Admission` middleware of `gateway.http.admission`: HTTP 503,
`Retry-After`, the GraphQL error `OVERLOADED`) and unary gRPC calls (`gateway.grpc.admission`:
RESOURCE_EXHAUSTED) take their turns from the same `AdmissionControl`. Long-lived
streams (GraphQL WebSocket subscriptions, the gRPC watch stream) and the other routes are
not admitted: they mostly wait, and would hold a turn for as long as they stay open.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from gateway.domain.errors import Overloaded
from gateway.observability.metrics import Metrics
from gateway.observability.record import current_record

__all__ = ["OVERLOADED_MESSAGE", "AdmissionControl"]

OVERLOADED_MESSAGE: Final = "The gateway is at capacity; retry shortly."


class AdmissionControl:
    """The process's request budget: `enter` before the work, `leave` after it."""

    def __init__(
        self, *, max_concurrent: int, max_queued: int, queue_timeout_s: float, metrics: Metrics
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.metrics = metrics
        self.running = 0
        self.queued = 0
        # What a refused caller is told to wait, in whole seconds: a queue turn's length.
        self.retry_after = max(1, math.ceil(queue_timeout_s))
        self._slots = asyncio.Semaphore(max_concurrent)

    async def enter(self) -> None:
        """Take a turn, waiting in the queue if need be; `Overloaded` when refused (the
        current request's outcome is then `overloaded`). Pair with `leave`."""
        if self._slots.locked():
            if self.queued >= self.max_queued:
                raise self._refused("queue_full")
            if not await self._wait_for_turn():
                raise self._refused("queue_timeout")
        else:
            await self._slots.acquire()  # a slot is free: returns without waiting
        self.running += 1
        self.metrics.admission_in_flight.set(self.running)

    def leave(self) -> None:
        self.running -= 1
        self.metrics.admission_in_flight.set(self.running)
        self._slots.release()

    async def _wait_for_turn(self) -> bool:
        self.queued += 1
        self.metrics.admission_queued.set(self.queued)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            return False
        finally:
            self.queued -= 1
            self.metrics.admission_queued.set(self.queued)
        return True

    def _refused(self, reason: str) -> Overloaded:
        self.metrics.admission_refused.labels(reason).inc()
        record = current_record.get()
        if record is not None:
            record.outcome = "overloaded"
        return Overloaded(OVERLOADED_MESSAGE, retry_after=self.retry_after, reason=reason)
