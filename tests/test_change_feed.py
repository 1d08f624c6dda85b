"""The change feed and log in process: the seam between replay and live, a subscriber that
falls behind, retention, cursors, what counts as a change, and the poller's pauses.

No servers: the feed, the log and the poller are built directly, with injected clocks and a
legacy reader that answers from a dict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.changes import (
    ChangeCursor,
    ListingChange,
    LoggedChange,
    LogPosition,
    PortalMark,
    changed_portals,
    decode_change_cursor,
    legacy_fingerprints,
    merge_v3_marks,
)
from gateway.domain.errors import CursorExpired, InvalidInput, Overloaded, UpstreamUnavailable
from gateway.domain.models import (
    LegacyAdKey,
    LegacyAdStatus,
    LegacyBatch,
    LegacyFeatureStatus,
    LegacyPortalStatus,
    LegacyPublishStatus,
    ListingRef,
    Portal,
    Provider,
    PublicationState,
)
from gateway.live.bus import LocalEventBus
from gateway.live.changelog import LocalChangeLog
from gateway.live.changes import ChangeFeed, WatchedChange
from gateway.live.poller import LegacyPoller, LocalPollShare, WatchRegistry

NOW = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def v3_change(classified_id: str, n: int = 0) -> ListingChange:
    return ListingChange(
        provider=Provider.CLASSIFIEDS_V3,
        portals=(Portal.SL,),
        received_at=NOW + timedelta(seconds=n),
        classified_id=classified_id,
    )


def feed_over(
    log: LocalChangeLog, *, max_queue: int = 256, max_subscribers: int = 10
) -> ChangeFeed:
    bus = LocalEventBus(max_subscribers=max_subscribers)
    return ChangeFeed(log, reserve=bus.reserve, max_queue=max_queue)


async def take(changes: object, count: int) -> list[WatchedChange]:
    iterator = aiter(changes)  # type: ignore[call-overload]
    return [await anext(iterator) for _ in range(count)]


class SeamLog(LocalChangeLog):
    """A log where changes are appended while a subscriber reads its backlog: the moment
    between registering for live changes and replaying."""

    def __init__(self, during_replay: Sequence[ListingChange]) -> None:
        super().__init__()
        self.during_replay = list(during_replay)

    async def read_after(self, cursor: ChangeCursor, *, strict: bool = False) -> list[LoggedChange]:
        for change in self.during_replay:
            self.add(change)  # in the backlog read next, and delivered live as well
        self.during_replay = []
        return self.entries_after(cursor, strict=strict)


async def test_changes_at_the_seam_of_replay_and_live_come_once_and_in_order() -> None:
    log = SeamLog([v3_change("a", 3), v3_change("a", 4)])
    feed = feed_over(log)
    first = log.add(v3_change("a", 1))
    log.add(v3_change("a", 2))
    async with feed.subscribe([ListingRef(classified_id="a")], first.cursor.encode()) as changes:
        seen = await take(changes, 3)
        log.add(v3_change("a", 5))
        seen += await take(changes, 1)
    # 3 and 4 were both in the backlog and delivered live: sent once, from the backlog.
    assert [w.entry.cursor.position.major for w in seen] == [2, 3, 4, 5]
    assert feed.stats.replayed == 3


async def test_a_subscriber_that_falls_behind_reads_what_it_missed_from_the_log() -> None:
    log = LocalChangeLog()
    feed = feed_over(log, max_queue=2)
    async with feed.subscribe([ListingRef(classified_id="a")]) as changes:
        for n in range(10):
            log.add(v3_change("a", n))
            log.add(v3_change("b", n))  # not watched: never queued
        seen = await take(changes, 10)
    assert [w.change.received_at.second for w in seen] == list(range(10))
    assert feed.stats.caught_up == 1


async def test_subscriptions_share_the_event_bus_bound() -> None:
    bus = LocalEventBus(max_subscribers=2)
    feed = ChangeFeed(LocalChangeLog(), reserve=bus.reserve)
    async with bus.subscribe({"x"}), feed.subscribe([ListingRef(classified_id="a")]):
        with pytest.raises(Overloaded):
            async with feed.subscribe([ListingRef(classified_id="b")]):
                pass
        with pytest.raises(Overloaded):
            async with bus.subscribe({"y"}):
                pass
    assert bus.stats.refused == 2
    assert bus.reserved == 0 and not feed.subscribers


async def test_legacy_refs_are_watched_while_subscribed() -> None:
    feed = feed_over(LocalChangeLog())
    ad = LegacyAdKey(7, 70)
    refs = [ListingRef(legacy=ad), ListingRef(classified_id="c", legacy=ad)]
    async with feed.subscribe(refs), feed.subscribe([ListingRef(legacy=ad)]):
        assert feed.watches.by_user() == {7: frozenset({70})}
    assert feed.watches.by_user() == {}


# --- the log ------------------------------------------------------------------------------


def test_a_change_is_kept_for_the_retention_and_within_the_entry_bound() -> None:
    clock = Clock()
    log = LocalChangeLog(retention_s=900, max_entries=3, clock=clock)
    first = log.add(v3_change("a", 1))
    log.add(v3_change("a", 2))
    assert [e.change.received_at.second for e in log.entries_after(first.cursor)] == [2]

    clock.now += 901  # past the retention: both are gone, and so is what followed `first`
    with pytest.raises(CursorExpired):
        log.entries_after(first.cursor)
    head = log.head()
    # Nothing after the newest is gone, which is enough for a subscription catching up.
    assert log.entries_after(head) == []
    # A client's cursor older than the retention is refused all the same: while it was
    # away, a change to its ads may have gone unlogged.
    with pytest.raises(CursorExpired):
        log.entries_after(head, strict=True)
    newest = log.add(v3_change("a", 9))
    assert log.entries_after(newest.cursor, strict=True) == []
    for n in range(5):
        log.add(v3_change("a", n))
    assert len(log) == 3
    with pytest.raises(CursorExpired):
        log.entries_after(newest.cursor)  # changes after it went past the bound


def test_cursors_are_opaque_versioned_and_name_their_log() -> None:
    log = LocalChangeLog(epoch="abc123")
    entry = log.add(v3_change("a"))
    opaque = entry.cursor.encode()
    assert "abc123" not in opaque
    assert decode_change_cursor(opaque) == ChangeCursor("abc123", LogPosition(1))
    with pytest.raises(CursorExpired):
        LocalChangeLog(epoch="other1").entries_after(entry.cursor)  # another process's
    for bad in ("", "x", "bGMxOmE6Yg", "bGMyOmFiYzEyMzoxLTA", "!!!", "a" * 300):
        with pytest.raises(InvalidInput):
            decode_change_cursor(bad)
    with pytest.raises(InvalidInput):
        log.entries_after(ChangeCursor("abc123", LogPosition(9)))  # never handed out


# --- what counts as a change --------------------------------------------------------------


def test_a_v3_portal_changes_when_its_state_moves_not_its_date_nor_an_older_event() -> None:
    online = PortalMark(PublicationState.ONLINE, NOW)
    known, changed = merge_v3_marks({}, {Portal.SL: online, Portal.BU: online})
    assert changed == (Portal.SL, Portal.BU)  # the first event of a classified
    later = PortalMark(PublicationState.ONLINE, NOW + timedelta(minutes=1))
    known, changed = merge_v3_marks(known, {Portal.SL: later})
    assert changed == () and known[Portal.SL] == later
    older = PortalMark(PublicationState.FAILED, NOW - timedelta(minutes=1))
    known, changed = merge_v3_marks(known, {Portal.SL: older})
    assert changed == () and known[Portal.SL] == later
    failed = PortalMark(PublicationState.FAILED, NOW + timedelta(minutes=2))
    _, changed = merge_v3_marks(known, {Portal.SL: failed, Portal.BU: failed})
    assert changed == (Portal.SL, Portal.BU)


def ad(
    *, online: bool = True, feature_active: bool = False, unknown: bool = False
) -> LegacyAdStatus:
    portals = [
        LegacyPortalStatus(
            "marktplaats",
            Portal.MARKTPLAATS,
            LegacyPublishStatus(active=True, online=online),
            (LegacyFeatureStatus("dagtopper", active=feature_active),),
        ),
        LegacyPortalStatus("website", Portal.WEBSITE, LegacyPublishStatus()),
    ]
    if unknown:
        portals.append(LegacyPortalStatus("kapaza", None, LegacyPublishStatus(error=True)))
    return LegacyAdStatus(1, 2, tuple(portals))


def test_a_legacy_portal_changes_with_any_publish_or_feature_field() -> None:
    base = legacy_fingerprints(ad())
    assert changed_portals(base, legacy_fingerprints(ad())) == ()
    assert changed_portals(base, legacy_fingerprints(ad(online=False))) == (Portal.MARKTPLAATS,)
    assert changed_portals(base, legacy_fingerprints(ad(feature_active=True))) == (
        Portal.MARKTPLAATS,
    )
    # A portal the gateway does not show is not a change it can show.
    assert changed_portals(base, legacy_fingerprints(ad(unknown=True))) == ()
    assert changed_portals(base, legacy_fingerprints(None)) == (Portal.MARKTPLAATS, Portal.WEBSITE)


# --- the poller -----------------------------------------------------------------------------


class Legacy:
    """A legacy reader answering from `ads`, or failing with `failure`."""

    def __init__(self) -> None:
        self.ads: dict[tuple[int, int], LegacyAdStatus] = {}
        self.failure: Exception | None = None
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch:
        self.calls.append((user_id, tuple(ad_ids)))
        if self.failure is not None:
            raise self.failure
        found = {a: self.ads[(user_id, a)] for a in ad_ids if (user_id, a) in self.ads}
        return LegacyBatch(user_id, found, frozenset(set(ad_ids) - set(found)))


async def test_the_poller_waits_while_the_breaker_is_open_then_polls_again() -> None:
    clock, legacy, watches = Clock(), Legacy(), WatchRegistry()
    log = LocalChangeLog()
    poller = LegacyPoller(
        legacy, watches, LocalPollShare(retention_s=900), log.append, interval_s=15, clock=clock
    )
    legacy.ads[(1, 2)] = ad()
    watches.watch([LegacyAdKey(1, 2)])
    await poller.baseline()
    legacy.failure = UpstreamUnavailable(
        "circuit open", upstream="legacy", reason="circuit_open", retry_after=10
    )
    await poller.poll_once()
    await poller.poll_once()  # still open: not asked
    assert len(legacy.calls) == 2 and poller.stats.deferred == 1

    legacy.failure = None
    legacy.ads[(1, 2)] = ad(online=False)
    clock.now += 10
    await poller.poll_once()
    assert len(legacy.calls) == 3
    [entry] = log.entries_after(ChangeCursor(log.identity, LogPosition(0)))
    assert entry.change.legacy == LegacyAdKey(1, 2)
    assert entry.change.portals == (Portal.MARKTPLAATS,)
    assert entry.change.legacy_status == ad(online=False)


class ClaimTurningCancelIntoRedisDown(LocalPollShare):
    """A share whose claim answers the caller's cancellation as a Redis failure (alone: poll
    what is watched here), as a Redis client's own socket timeout does when it expires at
    the moment its caller is cancelled."""

    def __init__(self) -> None:
        super().__init__(retention_s=900)
        self.claims = 0
        self.claiming = asyncio.Event()

    async def claim(self, watched: Mapping[int, frozenset[int]]) -> dict[int, frozenset[int]]:
        self.claims += 1
        if self.claims == 1:
            self.claiming.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return dict(watched)
        return await super().claim(watched)


async def test_a_cancelled_poller_ends_even_when_a_call_turns_the_cancel_into_a_failure() -> None:
    """A replica stopping (or a test) cancels the poller and awaits it; a Redis call that
    answered the cancel as a failure left the loop polling for ever."""
    legacy, watches, share = Legacy(), WatchRegistry(), ClaimTurningCancelIntoRedisDown()
    poller = LegacyPoller(legacy, watches, share, LocalChangeLog().append, interval_s=0.01)
    poller.start()
    await share.claiming.wait()  # the first poll's claim is under way
    task = poller._task
    assert task is not None
    task.cancel()
    async with asyncio.timeout(30):  # only a poller that ignores the cancel reaches it
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert share.claims == 1  # it did not poll again
