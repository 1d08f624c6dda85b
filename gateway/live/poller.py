"""Legacy changes by polling: the legacy API has no webhooks, so watched ads are asked again.

`WatchRegistry` counts, per legacy ad, the subscriptions of this process that watch it.
`LegacyPoller` asks the legacy API every `interval_s` (GATEWAY_LEGACY_POLL_S) for the
watched ads — one `POST /status/` per user and poll (chunked as any legacy batch), however
many subscriptions watch them — and compares each ad with its last snapshot: a portal whose
publish or feature fields changed (`legacy_fingerprints`) makes a `ListingChange` that goes
into the change log. An ad nobody watches any more is not asked for again.

- A newly watched ad is read soon after (not at the next interval) to take its first
  snapshot, which is never itself a change; a snapshot outlives the last watcher for the
  log's retention, so a client that comes back within it learns what changed meanwhile.
- A failed poll is retried at the next interval; an upstream that says when to come back
  (429 `Retry-After`, or the legacy circuit breaker while it is open) is not asked for that
  user before then.
- The runtime hands the poller the legacy status cache (`gateway.cache.legacy`) as its
  reader: every poll reads anew and replaces the polled ads' entries, so requests for
  watched ads (a board showing them) are served what the poll found, without reads of their
  own.
- `PollShare` is how replicas split the work: `LocalPollShare` polls everything this
  process watches; with Redis (`gateway.live.redis_changelog.RedisPollShare`) one replica
  per legacy user polls, holding a lease, the ads every replica watches.

Time is injected (`clock`, `now`); tests drive `poll_once()` and `baseline()` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cachetools import TTLCache

from gateway.domain.changes import ListingChange, changed_portals, legacy_fingerprints
from gateway.domain.errors import GatewayError
from gateway.domain.models import LegacyAdKey, Portal, Provider
from gateway.service.loaders import LegacyReader

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 15.0
# Snapshots kept in process: beyond this the least recently polled are forgotten (their next
# poll is a first snapshot again). ~300 bytes each.
MAX_SNAPSHOTS = 50_000

# A snapshot: per portal (its value), the digest of what a client sees of it.
Snapshot = dict[str, str]


class WatchRegistry:
    """How many subscriptions of this process watch each legacy ad."""

    def __init__(self) -> None:
        self._counts: dict[LegacyAdKey, int] = {}
        self._new: set[LegacyAdKey] = set()
        self._listeners: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._counts)

    def on_new(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever an ad nobody watched starts being watched."""
        self._listeners.append(listener)

    def watch(self, ads: Iterable[LegacyAdKey]) -> None:
        added = False
        for ad in set(ads):
            count = self._counts.get(ad, 0)
            self._counts[ad] = count + 1
            if count == 0:
                self._new.add(ad)
                added = True
        if added:
            for listener in self._listeners:
                listener()

    def unwatch(self, ads: Iterable[LegacyAdKey]) -> None:
        for ad in set(ads):
            count = self._counts.get(ad, 0) - 1
            if count > 0:
                self._counts[ad] = count
            else:
                self._counts.pop(ad, None)
                self._new.discard(ad)

    def by_user(self) -> dict[int, frozenset[int]]:
        """The watched ads of each legacy user."""
        users: dict[int, set[int]] = defaultdict(set)
        for ad in self._counts:
            users[ad.user_id].add(ad.ad_id)
        return {user: frozenset(ads) for user, ads in users.items()}

    @property
    def has_new(self) -> bool:
        return bool(self._new)

    def take_new(self) -> dict[int, frozenset[int]]:
        """Ads watched since the last call, by user (to take their first snapshot)."""
        users: dict[int, set[int]] = defaultdict(set)
        for ad in self._new:
            users[ad.user_id].add(ad.ad_id)
        self._new.clear()
        return {user: frozenset(ads) for user, ads in users.items()}


class PollShare(Protocol):
    """Who polls which user's ads, and where snapshots are kept."""

    async def claim(self, watched: Mapping[int, frozenset[int]]) -> dict[int, frozenset[int]]:
        """Say what this process watches; answers the users this process polls now, each with
        every ad watched anywhere."""
        ...

    async def snapshots(self, user: int, ads: Collection[int]) -> dict[int, Snapshot]:
        """The last snapshots of these ads (those that have one)."""
        ...

    async def store(
        self, user: int, snapshots: Mapping[int, Snapshot], *, only_new: bool = False
    ) -> None:
        """Keep these snapshots (with `only_new`, only where none is kept yet)."""
        ...

    async def release(self) -> None:
        """This process stops polling (shutdown): another may take over at once."""
        ...


class LocalPollShare:
    """One process polls everything it watches; snapshots in memory for `retention_s`."""

    def __init__(
        self,
        *,
        retention_s: float,
        max_snapshots: int = MAX_SNAPSHOTS,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshots: TTLCache[tuple[int, int], Snapshot] = TTLCache(
            maxsize=max_snapshots, ttl=retention_s, timer=timer
        )

    def __len__(self) -> int:
        return len(self._snapshots)

    async def claim(self, watched: Mapping[int, frozenset[int]]) -> dict[int, frozenset[int]]:
        return dict(watched)

    async def snapshots(self, user: int, ads: Collection[int]) -> dict[int, Snapshot]:
        return self.kept(user, ads)

    def kept(self, user: int, ads: Collection[int]) -> dict[int, Snapshot]:
        found: dict[int, Snapshot] = {}
        for ad in ads:
            snapshot = self._snapshots.get((user, ad))
            if snapshot is not None:
                found[ad] = snapshot
        return found

    async def store(
        self, user: int, snapshots: Mapping[int, Snapshot], *, only_new: bool = False
    ) -> None:
        self.keep(user, snapshots, only_new=only_new)

    def keep(self, user: int, snapshots: Mapping[int, Snapshot], *, only_new: bool = False) -> None:
        for ad, snapshot in snapshots.items():
            if not (only_new and (user, ad) in self._snapshots):
                self._snapshots[(user, ad)] = snapshot

    async def release(self) -> None:
        return None


@dataclass(slots=True)
class PollStats:
    """What the poller did, for metrics and tests."""

    polls: int = 0  # POST /status/ batches asked (one per user and poll; a baseline too)
    baselines: int = 0  # of which first snapshots of newly watched ads
    failures: int = 0  # polls the upstream did not answer
    deferred: int = 0  # users skipped because the upstream asked to wait (429, breaker)
    changes: int = 0  # changes found and logged


class LegacyPoller:
    """Polls the watched legacy ads; changes go to `append` (the change log).

    poller = LegacyPoller(legacy, watches, LocalPollShare(retention_s=900), log.append,
                          interval_s=15)
    poller.start()   # ... await poller.aclose()
    """

    def __init__(
        self,
        legacy: LegacyReader,
        watches: WatchRegistry,
        share: PollShare,
        append: Callable[[ListingChange], Awaitable[None]],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self.share = share
        self.stats = PollStats()
        self._legacy = legacy
        self._watches = watches
        self._append = append
        self._clock = clock
        self._now = now
        self._not_before: dict[int, float] = {}  # user -> when the upstream may be asked again
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        watches.on_new(self._wake.set)

    @property
    def watched(self) -> int:
        """Ads watched in this process."""
        return len(self._watches)

    async def poll_once(self) -> None:
        """One poll: every user this process polls now, one batch each, at the same time."""
        async with self._lock:
            mine = await self.share.claim(self._watches.by_user())
            now = self._clock()
            for user in set(self._not_before) - set(mine):
                del self._not_before[user]
            due = []
            for user, ads in mine.items():
                if not ads:
                    continue
                if self._not_before.get(user, 0.0) > now:
                    self.stats.deferred += 1
                else:
                    due.append((user, ads))
            await asyncio.gather(*(self._poll_user(user, ads) for user, ads in due))

    async def baseline(self) -> None:
        """First snapshots of the ads watched since the last call (ads that have one already,
        e.g. taken by another replica or kept from an earlier watcher, are not asked for)."""
        async with self._lock:
            new = self._watches.take_new()
            now = self._clock()
            due = [
                (user, ads) for user, ads in new.items() if self._not_before.get(user, 0.0) <= now
            ]
            await asyncio.gather(*(self._poll_user(user, ads, first=True) for user, ads in due))

    async def _poll_user(self, user: int, ads: frozenset[int], *, first: bool = False) -> None:
        previous = await self.share.snapshots(user, ads)
        asked = sorted(ad for ad in ads if ad not in previous) if first else sorted(ads)
        if not asked:
            return
        self.stats.polls += 1
        self.stats.baselines += first
        try:
            batch = await self._legacy.ads_status(user, asked)
        except GatewayError as error:
            self.stats.failures += 1
            retry_after = getattr(error, "retry_after", None)
            if retry_after:
                self._not_before[user] = self._clock() + retry_after
            log.info("legacy poll of user %d failed: %s", user, error.message)
            return
        self._not_before.pop(user, None)
        received_at = self._now()
        snapshots: dict[int, Snapshot] = {}
        changes: list[ListingChange] = []
        for ad in asked:
            status = batch.found.get(ad)
            after = legacy_fingerprints(status)
            snapshots[ad] = {portal.value: digest for portal, digest in after.items()}
            before = previous.get(ad)
            if first or before is None:
                continue
            portals = changed_portals(
                {Portal(portal): digest for portal, digest in before.items()}, after
            )
            if portals:
                changes.append(
                    ListingChange(
                        provider=Provider.LEGACY,
                        portals=portals,
                        received_at=received_at,
                        legacy=LegacyAdKey(user, ad),
                        legacy_status=status,
                    )
                )
        await self.share.store(user, snapshots, only_new=first)
        for change in changes:
            await self._append(change)
        self.stats.changes += len(changes)

    # --- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="legacy-poller")

    async def run(self) -> None:
        """Poll every `interval_s`; take first snapshots as soon as ads are newly watched."""
        next_poll = self._clock() + self.interval_s
        task = asyncio.current_task()
        while True:
            self._wake.clear()
            try:
                if self._watches.has_new:
                    await self.baseline()
                if self._clock() >= next_poll:
                    await self.poll_once()
                    next_poll = max(next_poll + self.interval_s, self._clock())
                    _end_if_cancelled(task)
                    continue
            except Exception:  # a background loop: one bad round must not end polling
                log.exception("legacy poll round failed")
            _end_if_cancelled(task)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_poll - self._clock())):
                    await self._wake.wait()

    async def aclose(self) -> None:
        """Stop polling and let another replica take over this one's users."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.share.release()


def _end_if_cancelled(task: asyncio.Task[None] | None) -> None:
    """Raise the cancellation a call swallowed. A client's own timeout that expires as its
    caller is cancelled may answer the cancel as a timeout (a Redis call then reads as Redis
    down, and the round goes on): the request stays counted on the task, and is honoured
    here, or the loop would poll on and whoever awaits it (a stopping replica) wait for ever."""
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
