"""The event bus: accepted webhook events fanned out to whoever watches.

`EventBus` is the seam every edge codes against (GraphQL subscriptions, gRPC streaming);
`LocalEventBus` is the in-process implementation, and a Redis-backed one can implement the
same two methods for several replicas.

Publishing never blocks and never fails because of a subscriber: each subscriber owns a
bounded queue, and a subscriber that does not keep up loses its oldest events (counted, and
logged once per subscriber), so one stuck client can never grow memory without bound.
Subscribers are indexed by the classifieds they watch: an event costs the subscribers of its
classified (and those that watch every one), not a scan of all of them. A process holds at
most `max_subscribers` (`GATEWAY_MAX_SUBSCRIPTIONS`, GraphQL subscriptions and gRPC watch
streams together, the listing-change streams of `gateway.live.changes` included through
`reserve()`); one more is refused with `Overloaded`, which each edge answers as docs/operating.md
says (GraphQL `OVERLOADED`, gRPC RESOURCE_EXHAUSTED).

    async with bus.subscribe({"id1"}) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.errors import Overloaded
from gateway.domain.models import ClassifiedStatusEvent
from gateway.live.wakeup import Signal, Wakeup

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
DEFAULT_MAX_SUBSCRIBERS = 10_000
# What a refused subscriber is told to wait before it tries again: subscriptions end when
# their clients leave, not on a schedule, so this is only a hint.
RETRY_AFTER_S = 5.0


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

    def has_room(self) -> bool:
        """Whether one more subscription (or reserved slot) would be let in now."""
        ...

    def check_room(self) -> None:
        """`Overloaded` (counted as refused) when one more would not be let in now."""
        ...


@dataclass(slots=True)
class BusStats:
    """What the bus did, for tests and metrics."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    refused: int = 0  # subscriptions refused at the `max_subscribers` bound


class Subscriber:
    """One subscriber's bounded queue; iterating it waits for the next event.

    Lives only inside `LocalEventBus.subscribe`: leaving that block unregisters it, so a
    closed socket frees its queue.
    """

    def __init__(self, classified_ids: frozenset[str] | None, max_queue: int) -> None:
        self.classified_ids = classified_ids
        self.dropped = 0
        self._max_queue = max_queue
        # Made when an event comes and dropped once read: most subscribers wait, empty,
        # for most of their life (an empty deque is ~0.75 KB).
        self._queue: deque[ClassifiedStatusEvent] | None = None
        self._ready = Wakeup()

    def __len__(self) -> int:
        return 0 if self._queue is None else len(self._queue)

    def offer(self, event: ClassifiedStatusEvent) -> bool:
        """Queue `event`; returns False when that pushed the oldest one out."""
        if self._queue is None:
            self._queue = deque(maxlen=self._max_queue)
        full = len(self._queue) == self._max_queue
        self._queue.append(event)  # a full deque drops from the other end
        self._ready.set()
        if full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "event subscriber is not keeping up: dropping its oldest events "
                    "(queue of %d); further drops are only counted",
                    self._max_queue,
                )
        return not full

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> ClassifiedStatusEvent:
        while not self._queue:
            await self._ready.wait()
        event = self._queue.popleft()
        if not self._queue:
            self._queue = None
        return event


class LocalEventBus:
    """In-process fan-out: one bounded queue per subscriber, oldest dropped when full.

    >>> bus = LocalEventBus(max_queue=256, max_subscribers=10_000)
    """

    def __init__(
        self, *, max_queue: int = DEFAULT_QUEUE_SIZE, max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if max_subscribers < 1:
            raise ValueError("max_subscribers must be at least 1")
        self.max_queue = max_queue
        self.max_subscribers = max_subscribers
        self.stats = BusStats()
        self._subscribers: set[Subscriber] = set()
        self._reserved = 0  # slots held by other streams (`reserve`)
        # Who gets an event: those watching every classified, and those indexed under its id.
        self._everything: set[Subscriber] = set()
        self._by_classified: dict[str, set[Subscriber]] = {}
        # Notified when a subscriber comes or goes: `await bus.membership.until(...)`.
        self.membership = Signal()

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        """The subscribers registered now (a snapshot)."""
        return frozenset(self._subscribers)

    def publish(self, event: ClassifiedStatusEvent) -> None:
        self.stats.published += 1
        watching = self._by_classified.get(event.classified_id, ())
        for group in (tuple(self._everything), tuple(watching)):
            for subscriber in group:
                self.stats.delivered += 1
                if not subscriber.offer(event):
                    self.stats.dropped += 1

    def subscribe(
        self, classified_ids: Collection[str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ClassifiedStatusEvent]]:
        """Raises `Overloaded` on entering the block when `max_subscribers` are registered."""
        return _Subscription(self, None if classified_ids is None else frozenset(classified_ids))

    @property
    def reserved(self) -> int:
        """Slots held through `reserve()`."""
        return self._reserved

    def reserve(self) -> AbstractContextManager[None]:
        """Hold one subscription slot for another kind of stream while the block runs;
        `Overloaded` when none is free."""
        return _Reservation(self)

    def has_room(self) -> bool:
        return len(self._subscribers) + self._reserved < self.max_subscribers

    def check_room(self) -> None:
        self._check_room()

    def _check_room(self) -> None:
        if not self.has_room():
            self.stats.refused += 1
            raise Overloaded(
                f"this gateway holds its most subscriptions ({self.max_subscribers}); "
                "try again later",
                retry_after=RETRY_AFTER_S,
                reason="subscriptions",
            )

    def _register(self, classified_ids: frozenset[str] | None) -> Subscriber:
        self._check_room()
        subscriber = Subscriber(classified_ids, self.max_queue)
        self._subscribers.add(subscriber)
        self.membership.notify()
        if classified_ids is None:
            self._everything.add(subscriber)
        else:
            for classified_id in classified_ids:
                self._by_classified.setdefault(classified_id, set()).add(subscriber)
        return subscriber

    def _unregister(self, subscriber: Subscriber) -> None:
        if subscriber.dropped:
            log.info("event subscriber closed after %d dropped events", subscriber.dropped)
        self._subscribers.discard(subscriber)
        self.membership.notify()
        if subscriber.classified_ids is None:
            self._everything.discard(subscriber)
            return
        for classified_id in subscriber.classified_ids:
            watching = self._by_classified.get(classified_id)
            if watching is not None:
                watching.discard(subscriber)
                if not watching:
                    del self._by_classified[classified_id]


class _Subscription:
    """`LocalEventBus.subscribe`'s block. A class, not a generator: its frame would wait as
    long as the subscription does."""

    __slots__ = ("_bus", "_classified_ids", "_subscriber")

    def __init__(self, bus: LocalEventBus, classified_ids: frozenset[str] | None) -> None:
        self._bus = bus
        self._classified_ids = classified_ids
        self._subscriber: Subscriber | None = None

    async def __aenter__(self) -> Subscriber:
        self._subscriber = self._bus._register(self._classified_ids)
        return self._subscriber

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscriber is not None:
            self._bus._unregister(self._subscriber)
            self._subscriber = None


class _Reservation:
    """`LocalEventBus.reserve`'s block (a class: see `_Subscription`)."""

    __slots__ = ("_bus", "_held")

    def __init__(self, bus: LocalEventBus) -> None:
        self._bus = bus
        self._held = False

    def __enter__(self) -> None:
        self._bus._check_room()
        self._bus._reserved += 1
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        if self._held:
            self._held = False
            self._bus._reserved -= 1
