"""The event bus across replicas: webhook events fanned out through Redis pub/sub.

`RedisEventBus` is an `EventBus`. `publish` (on the replica whose receiver accepted the
callback) claims the event's id in Redis with `SET NX` (a second delivery of the same
status to any replica is then a duplicate and goes no further), drops the classified's
pages from Redis, and publishes the event on one channel. Every replica, the publishing one
included, listens on that channel: it drops the classified from its in-process page layer
and hands the event to its own subscribers (a `LocalEventBus`), so each subscriber on each
replica sees each event once.

With Redis away, `publish` hands the event to this replica's subscribers directly (the
other replicas cannot hear it; their pages age out with the TTL), and the listener
reconnects with the link's backoff. After a reconnect the in-process page layer is emptied:
drops may have been missed meanwhile.

The same listener hears the page cache's lock releases (`SharedPageCache.fill_channel`),
published only when another replica waits for that page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError

from gateway.cache.shared import SharedPageCache
from gateway.domain import ids
from gateway.domain.models import ClassifiedStatusEvent
from gateway.infra.redis_link import RedisDown, RedisLink
from gateway.live.bus import BusStats, LocalEventBus, Subscriber

log = logging.getLogger(__name__)

_EVENT: Final = TypeAdapter(ClassifiedStatusEvent)
# How long an event id is remembered across replicas, to recognise a repeated delivery.
DEDUP_TTL_S: Final = 24 * 3600
# How long the listener waits for a message before it checks the connection.
_POLL_S: Final = 1.0


@dataclass(slots=True)
class SharedBusStats:
    sent: int = 0  # events published through Redis
    received: int = 0  # events heard on the channel (each replica hears each one)
    duplicates: int = 0  # deliveries another replica (or this one) had already claimed
    alone: int = 0  # events handed to local subscribers only, because Redis was away


class RedisEventBus:
    """`LocalEventBus` per replica, joined through one Redis pub/sub channel."""

    def __init__(
        self, link: RedisLink, *, local: LocalEventBus, cache: SharedPageCache | None
    ) -> None:
        self.link = link
        self.local = local
        self.cache = cache
        self.channel = link.key("events")
        self.shared = SharedBusStats()
        self.listening = asyncio.Event()  # set while subscribed to the channel
        # Set once the first attempt to subscribe has ended, subscribed or not: a replica
        # starting while Redis is away waits for that, not for a Redis that may never come.
        self.tried = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listener: asyncio.Task[None] | None = None

    @property
    def stats(self) -> BusStats:
        """This replica's fan-out to its own subscribers (what `LocalEventBus` counts)."""
        return self.local.stats

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return self.local.subscribers

    def publish(self, event: ClassifiedStatusEvent) -> None:
        self._spawn(self._publish(event))

    def subscribe(
        self, classified_ids: Collection[str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ClassifiedStatusEvent]]:
        return self.local.subscribe(classified_ids)

    def has_room(self) -> bool:
        return self.local.has_room()

    def check_room(self) -> None:
        self.local.check_room()

    async def _publish(self, event: ClassifiedStatusEvent) -> None:
        item = event.status
        status_key = item.status_id or ids.derived_status_id(
            event.classified_id, item.status_date, item.raw_status
        )
        claim = self.link.key("event", event.classified_id, status_key)
        try:
            fresh = await self.link.run(lambda r: r.set(claim, b"1", nx=True, ex=DEDUP_TTL_S))
            if not fresh:
                self.shared.duplicates += 1
                return
            if self.cache is not None:
                # Before the news goes out: a replica that reads at once must not find the
                # old page in Redis.
                await self.cache.drop_shared(event.classified_id)
            payload = _EVENT.dump_json(event)
            await self.link.run(lambda r: r.publish(self.channel, payload))
        except RedisDown:
            self.shared.alone += 1
            self.local.publish(event)
            return
        self.shared.sent += 1

    def start(self) -> None:
        """Start listening on the channel (`listening` is set once subscribed)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="redis-event-listener")

    async def _listen(self) -> None:
        lost = False
        while True:
            try:
                async with self.link.client.pubsub() as pubsub:
                    channels = [self.channel]
                    if self.cache is not None:
                        channels.append(self.cache.fill_channel)
                    await pubsub.subscribe(*channels)
                    if lost and self.cache is not None:
                        self.cache.clear()  # events may have passed while unsubscribed
                    self.link.succeeded()
                    self.listening.set()
                    self.tried.set()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=_POLL_S
                        )
                        if message is not None and message.get("type") == "message":
                            self._heard(message["channel"], message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                self.listening.clear()
                lost = True
                self.link.failed(exc)
                self.tried.set()
                await asyncio.sleep(self.link.backoff_s)

    def _heard(self, channel: bytes, data: bytes) -> None:
        if self.cache is not None and channel == self.cache.fill_channel.encode():
            self.cache.filled(data)  # a page's lock was let go: its waiters look again
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            event = _EVENT.validate_json(data)
        except ValidationError:
            log.warning("ignoring an unreadable message on %s", self.channel)
            return
        self.shared.received += 1
        if self.cache is not None:
            self.cache.drop_local(event.classified_id)
        self.local.publish(event)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Until the publishes started so far have gone out (or fallen back to local)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop listening; let the publishes still running finish."""
        await self.settled()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self.listening.clear()
