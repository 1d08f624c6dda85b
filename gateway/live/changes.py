"""The change feed: what `listingChanged` and gRPC `WatchListings` read.

`ChangeFeed` joins the parts of live listing status on both sides:

- V3: each accepted webhook event (`note_v3`) is compared with the last known state of its
  portals (`V3Marks`; the first event of a classified is a change) and, when a portal's
  unified state moved, logged as a `ListingChange`;
- legacy: the poller (`gateway.live.poller`) logs the changes it finds in the ads that
  subscriptions watch (the feed keeps the `WatchRegistry` it polls);
- the log (`gateway.live.changelog`) keeps them for the retention and hands each new one to
  the feed, which gives it to the subscriptions of this process that watch its listing.

A subscription registers for live changes first, then replays what the log holds after its
cursor, then goes on with the live ones it has not replayed: no gap and no duplicate at the
seam. Each subscription has a bounded queue; one that does not keep up is not dropped from
but catches up from the log (it holds every change), so it still sees each change once, in
order — unless the changes it missed are past the retention, which ends it with
`CursorExpired`. Subscriptions count against the event bus's `max_subscribers`.

    async with feed.subscribe(refs, after=cursor) as changes:
        async for watched in changes:
            ...  # watched.cursor, watched.change, watched.ref; read the listing with feed.listing
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import LRUCache

from gateway.domain.changes import (
    ChangeCursor,
    ListingChange,
    LoggedChange,
    LogPosition,
    PortalMark,
    change_key,
    decode_change_cursor,
    merge_v3_marks,
    ref_keys,
    v3_marks,
)
from gateway.domain.errors import CursorExpired, GatewayError
from gateway.domain.models import (
    ClassifiedStatusEvent,
    LegacyAdKey,
    ListingRef,
    Portal,
    Provider,
)
from gateway.live.changelog import ChangeLog
from gateway.live.poller import WatchRegistry
from gateway.live.wakeup import Signal, Wakeup
from gateway.service.listings import ListingData, ListingRequest
from gateway.service.plan import ListingSelection

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256
# Listings read for events, shared by the subscriptions that show the same event alike.
_SHARED_READS = 1024


class V3Marks(Protocol):
    """The last known state of each V3 portal, to tell a change from a repeat."""

    async def merge(
        self, classified_id: str, marks: dict[Portal, PortalMark]
    ) -> tuple[Portal, ...]:
        """Record `marks`; answers the portals whose state changed."""
        ...


class LocalV3Marks:
    """In process, for the most recently changed `max_entries` classifieds."""

    def __init__(self, max_entries: int = 65_536) -> None:
        self._known: LRUCache[str, dict[Portal, PortalMark]] = LRUCache(maxsize=max_entries)

    async def merge(
        self, classified_id: str, marks: dict[Portal, PortalMark]
    ) -> tuple[Portal, ...]:
        merged, changed = merge_v3_marks(self._known.get(classified_id, {}), marks)
        self._known[classified_id] = merged
        return changed


@dataclass(frozen=True, slots=True)
class WatchedChange:
    """A change as one subscription sees it: `ref` is the subscription's ref it concerns."""

    entry: LoggedChange
    ref: ListingRef

    @property
    def change(self) -> ListingChange:
        return self.entry.change

    @property
    def cursor(self) -> str:
        return self.entry.cursor.encode()


@dataclass(slots=True)
class ChangeStats:
    """What the feed did, for metrics and tests."""

    delivered: int = 0  # live changes handed to subscriptions
    replayed: int = 0  # changes sent from the log after a cursor
    expired: int = 0  # cursors refused: changes after them are gone
    caught_up: int = 0  # times a subscription that fell behind read its changes from the log
    v3_events: int = 0  # webhook events looked at
    v3_changes: int = 0  # of which changed a portal's state


class ChangeSubscriber:
    """One subscription's refs and bounded queue of live changes."""

    def __init__(self, refs: Sequence[ListingRef], max_queue: int, start: ChangeCursor) -> None:
        self.refs = tuple(dict.fromkeys(refs))
        self.keys = frozenset(key for ref in self.refs for key in ref_keys(ref))
        self.start = start
        self.behind = False  # the queue overflowed: what it lost is read from the log
        # Made when a change comes and dropped once read (an empty deque is ~0.75 KB, and
        # most subscriptions wait, empty, for most of their life).
        self._queue: deque[LoggedChange] | None = None
        self._max_queue = max_queue
        self._ready = Wakeup()

    def __len__(self) -> int:
        return 0 if self._queue is None else len(self._queue)

    def match(self, change: ListingChange) -> ListingRef | None:
        return next((ref for ref in self.refs if change.concerns(ref)), None)

    def offer(self, entry: LoggedChange) -> None:
        if self.behind:
            return
        if len(self) >= self._max_queue:
            self.fall_behind()
        else:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(entry)
            self._ready.set()

    def fall_behind(self) -> None:
        """Forget the queue: the next read catches up from the log."""
        self.behind = True
        self._queue = None
        self._ready.set()

    async def next(self) -> LoggedChange | None:
        """The next live change; None once the queue overflowed (read from the log then)."""
        while not self._queue and not self.behind:
            await self._ready.wait()
        if self.behind:
            self.behind = False
            return None
        assert self._queue is not None
        entry = self._queue.popleft()
        if not self._queue:
            self._queue = None
        return entry


class ChangeFeed:
    """Listing changes of both providers, resumable by cursor (see the module docstring).

    `reserve()` holds one of the process's subscription slots (the event bus's) for the life
    of a subscription, raising `Overloaded` when none is free.
    """

    def __init__(
        self,
        log: ChangeLog,
        *,
        reserve: Callable[[], AbstractContextManager[None]],
        watches: WatchRegistry | None = None,
        marks: V3Marks | None = None,
        max_queue: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.log = log
        self.watches = watches if watches is not None else WatchRegistry()
        self.stats = ChangeStats()
        self._reserve = reserve
        self._marks = marks if marks is not None else LocalV3Marks()
        self._max_queue = max_queue
        self._index: dict[str, set[ChangeSubscriber]] = {}
        self._subscribers: set[ChangeSubscriber] = set()
        # Notified when a subscription comes or goes: `await feed.membership.until(...)`.
        self.membership = Signal()
        self._delivered: dict[str, int] = {}  # per log, the last position delivered
        self._tasks: set[asyncio.Task[Any]] = set()
        self._v3_order = asyncio.Lock()
        self._reads: LRUCache[tuple[object, ...], asyncio.Future[ListingData]] = LRUCache(
            maxsize=_SHARED_READS
        )
        log.start(self._deliver)

    @property
    def subscribers(self) -> frozenset[ChangeSubscriber]:
        return frozenset(self._subscribers)

    # --- in ----------------------------------------------------------------------------

    async def append(self, change: ListingChange) -> None:
        await self.log.append(change)

    def note_v3(self, event: ClassifiedStatusEvent) -> None:
        """An accepted webhook event: logged as a change if it moved a portal's state."""
        self._spawn(self._note_v3(event))

    async def _note_v3(self, event: ClassifiedStatusEvent) -> None:
        self.stats.v3_events += 1
        marks = v3_marks(event.status)
        if not marks:
            return
        # One at a time, in the order accepted (the lock is first come, first served): with
        # Redis, comparing and appending wait on it, and two events of one classified must
        # not overtake each other.
        async with self._v3_order:
            portals = await self._marks.merge(event.classified_id, marks)
            if not portals:
                return
            self.stats.v3_changes += 1
            await self.log.append(
                ListingChange(
                    provider=Provider.CLASSIFIEDS_V3,
                    portals=portals,
                    received_at=event.received_at,
                    classified_id=event.classified_id,
                )
            )

    def _deliver(self, entry: LoggedChange) -> None:
        # Positions in a log are consecutive: a jump means entries never reached this
        # process (its stream reader was away while they were trimmed). Every subscription
        # then reads what it missed from the log, or learns that it is gone.
        position = entry.cursor.position.major
        last = self._delivered.get(entry.cursor.log)
        self._delivered[entry.cursor.log] = position
        if last is not None and position > last + 1:
            for subscriber in self._subscribers:
                subscriber.fall_behind()
        for subscriber in tuple(self._index.get(change_key(entry.change), ())):
            self.stats.delivered += 1
            subscriber.offer(entry)

    # --- out ---------------------------------------------------------------------------

    def subscribe(
        self,
        refs: Sequence[ListingRef],
        after: str | None = None,
        *,
        allows: Callable[[str], Awaitable[bool]] | None = None,
    ) -> AbstractAsyncContextManager[AsyncIterator[WatchedChange]]:
        """Changes of `refs` after the cursor `after` (None: from now on) while the block runs.

        `allows(classified_id)` filters V3 changes (a subscriber's tenant, see
        `gateway.live.visibility`). A cursor that does not decode is `InvalidInput` at once;
        one whose own or later changes are gone is `CursorExpired` on the first iteration.
        """
        cursor = None if after is None else decode_change_cursor(after)
        return _ChangeSubscription(self, refs, cursor, allows)

    async def _changes(
        self,
        subscriber: ChangeSubscriber,
        cursor: ChangeCursor | None,
        allows: Callable[[str], Awaitable[bool]] | None,
    ) -> AsyncIterator[WatchedChange]:
        # The last position handed on, per log: a change at or before it is not sent again.
        seen: dict[str, LogPosition] = {}
        resume = cursor or subscriber.start
        seen[resume.log] = resume.position

        def fresh(entry: LoggedChange) -> bool:
            last = seen.get(entry.cursor.log)
            if last is not None and entry.cursor.position <= last:
                return False
            seen[entry.cursor.log] = entry.cursor.position
            return True

        # The client's cursor is read strictly (see gateway.live.changelog); catching up
        # after falling behind is not: this subscription watched its ads all along.
        backlog = [] if cursor is None else await self._read_after(cursor, strict=True)
        while True:
            for entry in backlog:
                if not fresh(entry):
                    continue
                resume = entry.cursor
                ref = subscriber.match(entry.change)
                if ref is not None and await _allowed(entry.change, allows):
                    self.stats.replayed += 1
                    yield WatchedChange(entry, ref)
            live = await subscriber.next()
            if live is None:
                # Fell behind: the log has what the queue could not hold.
                self.stats.caught_up += 1
                backlog = await self._read_after(resume)
                continue
            backlog = []
            if not fresh(live):
                continue
            resume = live.cursor
            ref = subscriber.match(live.change)
            if ref is not None and await _allowed(live.change, allows):
                yield WatchedChange(live, ref)

    async def _read_after(
        self, cursor: ChangeCursor, *, strict: bool = False
    ) -> list[LoggedChange]:
        try:
            return await self.log.read_after(cursor, strict=strict)
        except CursorExpired:
            self.stats.expired += 1
            raise

    async def listing(
        self, watched: WatchedChange, scope: ListingRequest, selection: ListingSelection
    ) -> ListingData:
        """The listing a change concerns, as it stands now, read through `scope`.

        A legacy change brings the status it found, so the legacy read costs nothing. The
        subscriptions of one tenant that ask the same of the same event share one read.
        """
        change = watched.change
        if change.legacy_status is not None and watched.ref.legacy == change.legacy:
            scope.prime_legacy(change.legacy_status)
        try:
            key: tuple[object, ...] | None = (watched.cursor, watched.ref, scope.tenant, selection)
        except GatewayError:
            key = None  # no tenant (e.g. no credentials in passthrough mode): nothing to share
        read = None if key is None else self._reads.get(key)
        if read is None:
            read = asyncio.ensure_future(self._read(scope, watched.ref, selection))
            if key is not None:
                self._reads[key] = read
                read.add_done_callback(lambda done: self._forget_failed(key, done))
        # Shielded: a subscriber that leaves does not cancel a read the others wait for.
        return await asyncio.shield(read)

    @staticmethod
    async def _read(
        scope: ListingRequest, ref: ListingRef, selection: ListingSelection
    ) -> ListingData:
        [data] = await scope.listings([ref], selection)
        return data

    def _forget_failed(self, key: tuple[object, ...], read: asyncio.Future[ListingData]) -> None:
        failed = read.cancelled() or read.exception() is not None
        if failed and self._reads.get(key) is read:
            del self._reads[key]

    # --- bookkeeping -------------------------------------------------------------------

    def _register(self, subscriber: ChangeSubscriber) -> None:
        self._subscribers.add(subscriber)
        self.membership.notify()
        for key in subscriber.keys:
            self._index.setdefault(key, set()).add(subscriber)

    def _unregister(self, subscriber: ChangeSubscriber) -> None:
        self._subscribers.discard(subscriber)
        self.membership.notify()
        for key in subscriber.keys:
            watching = self._index.get(key)
            if watching is not None:
                watching.discard(subscriber)
                if not watching:
                    del self._index[key]

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not log a V3 change", exc_info=task.exception())

    async def settled(self) -> None:
        """Until the webhook events noted so far are logged."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.settled()
        await self.log.aclose()


async def _allowed(change: ListingChange, allows: Callable[[str], Awaitable[bool]] | None) -> bool:
    if allows is None or change.classified_id is None:
        return True  # legacy has one key for everyone: no tenant to check
    return await allows(change.classified_id)


class _ChangeSubscription:
    """`ChangeFeed.subscribe`'s block. A class, not a generator: its frame would wait as
    long as the subscription does."""

    __slots__ = ("_ads", "_allows", "_cursor", "_feed", "_refs", "_reservation", "_subscriber")

    def __init__(
        self,
        feed: ChangeFeed,
        refs: Sequence[ListingRef],
        cursor: ChangeCursor | None,
        allows: Callable[[str], Awaitable[bool]] | None,
    ) -> None:
        self._feed = feed
        self._refs = refs
        self._cursor = cursor
        self._allows = allows
        self._reservation: AbstractContextManager[None] | None = None
        self._subscriber: ChangeSubscriber | None = None
        self._ads: list[LegacyAdKey] = []

    async def __aenter__(self) -> AsyncIterator[WatchedChange]:
        feed = self._feed
        reservation = feed._reserve()
        reservation.__enter__()  # `Overloaded` when the process holds its most
        subscriber = ChangeSubscriber(self._refs, feed._max_queue, feed.log.head())
        feed._register(subscriber)
        self._ads = [ref.legacy for ref in subscriber.refs if ref.legacy is not None]
        feed.watches.watch(self._ads)
        self._reservation, self._subscriber = reservation, subscriber
        return feed._changes(subscriber, self._cursor, self._allows)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._subscriber is None or self._reservation is None:
            return
        self._feed.watches.unwatch(self._ads)
        self._feed._unregister(self._subscriber)
        self._reservation.__exit__(None, None, None)
        self._subscriber = self._reservation = None
