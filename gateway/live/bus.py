"""The event bus: accepted webhook events fanned out to whoever watches.

`EventBus` is the seam every edge codes against (GraphQL subscriptions, gRPC streaming);
`LocalEventBus` is the in-process implementation, and a Redis-backed one can implement the
same two methods for several replicas.

Publishing never blocks and never fails because of a subscriber: each subscriber owns a
bounded queue, and a subscriber that does not keep up loses its oldest events (counted, and
logged once per subscriber), so one stuck client can never grow memory without bound.

    async with bus.subscribe({"id1"}) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.models import ClassifiedStatusEvent

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256


class EventBus(Protocol):
    """Fan-out of classified status events."""

    def publish(self, event: ClassifiedStatusEvent) -> None:
        """Hand `event` to every matching subscriber; never blocks, never raises for one."""
        ...

    def subscribe(
        self, classified_ids: Collection[str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ClassifiedStatusEvent]]:
        """Events for these classifieds (None: every classified) while the block runs."""
        ...


@dataclass(slots=True)
class BusStats:
    """What the bus did, for tests and metrics."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0


class Subscriber:
    """One subscriber's bounded queue; iterating it waits for the next event.

    Lives only inside `LocalEventBus.subscribe`: leaving that block unregisters it, so a
    closed socket frees its queue.
    """

    def __init__(self, classified_ids: frozenset[str] | None, max_queue: int) -> None:
        self.classified_ids = classified_ids
        self.dropped = 0
        self._queue: deque[ClassifiedStatusEvent] = deque(maxlen=max_queue)
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def wants(self, event: ClassifiedStatusEvent) -> bool:
        return self.classified_ids is None or event.classified_id in self.classified_ids

    def offer(self, event: ClassifiedStatusEvent) -> bool:
        """Queue `event`; returns False when that pushed the oldest one out."""
        full = len(self._queue) == self._queue.maxlen
        self._queue.append(event)  # a full deque drops from the other end
        self._ready.set()
        if full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "event subscriber is not keeping up: dropping its oldest events "
                    "(queue of %d); further drops are only counted",
                    self._queue.maxlen,
                )
        return not full

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> ClassifiedStatusEvent:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class LocalEventBus:
    """In-process fan-out: one bounded queue per subscriber, oldest dropped when full."""

    def __init__(self, *, max_queue: int = DEFAULT_QUEUE_SIZE) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self.stats = BusStats()
        self._subscribers: set[Subscriber] = set()

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        """The subscribers registered now (a snapshot)."""
        return frozenset(self._subscribers)

    def publish(self, event: ClassifiedStatusEvent) -> None:
        self.stats.published += 1
        for subscriber in tuple(self._subscribers):
            if subscriber.wants(event):
                self.stats.delivered += 1
                if not subscriber.offer(event):
                    self.stats.dropped += 1

    def subscribe(
        self, classified_ids: Collection[str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ClassifiedStatusEvent]]:
        return self._subscription(None if classified_ids is None else frozenset(classified_ids))

    @asynccontextmanager
    async def _subscription(
        self, classified_ids: frozenset[str] | None
    ) -> AsyncIterator[AsyncIterator[ClassifiedStatusEvent]]:
        subscriber = Subscriber(classified_ids, self.max_queue)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            if subscriber.dropped:
                log.info("event subscriber closed after %d dropped events", subscriber.dropped)
