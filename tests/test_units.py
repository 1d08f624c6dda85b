"""Unit tests of the service's small parts: histories, the legacy loader, ids and checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import pytest

from gateway.cache.legacy import LegacyStatusCache
from gateway.cache.pages import PageCache
from gateway.domain import ids
from gateway.domain.cursors import KeysetCursor, encode_cursor
from gateway.domain.errors import InvalidInput, UpstreamNotFound, UpstreamUnavailable
from gateway.domain.models import (
    Caller,
    ClassifiedStatusCode,
    ClassifiedStatusItem,
    LegacyAdKey,
    LegacyAdStatus,
    LegacyBatch,
    ListingRef,
    StatusPage,
)
from gateway.service.checks import check_id, check_page_args, check_ref, check_refs
from gateway.service.histories import MAX_HISTORY_PAGES, read_history
from gateway.service.listings import ListingRequest, ListingService
from gateway.service.loaders import legacy_loader
from gateway.service.plan import ListingSelection

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def item(n: int) -> ClassifiedStatusItem:
    return ClassifiedStatusItem(
        status=ClassifiedStatusCode.UPDATED,
        raw_status="UPDATED",
        message=f"update {n}",
        status_date=EPOCH + timedelta(minutes=n),
        status_id=f"s{n}",
    )


# --- histories ----------------------------------------------------------------------------


class Pages:
    """An endless history (two items a page, oldest first, as upstream order is not trusted)."""

    def __init__(self, pages: int | None = None) -> None:
        self.pages = pages
        self.asked: list[str | None] = []

    async def __call__(self, token: str | None) -> StatusPage[ClassifiedStatusItem]:
        self.asked.append(token)
        n = len(self.asked)
        last = self.pages is not None and n >= self.pages
        return StatusPage((item(2 * n), item(2 * n + 1)), None if last else f"t{n}")


async def test_a_history_is_read_to_its_end_newest_first() -> None:
    pages = Pages(pages=3)
    history = await read_history(pages, "classified c1")
    assert history.complete
    assert pages.asked == [None, "t1", "t2"]
    assert [entry.status_id for entry in history.items] == ["s7", "s6", "s5", "s4", "s3", "s2"]
    assert history.latest() is history.items[0]


async def test_a_runaway_history_is_cut_at_its_page_cap(caplog: pytest.LogCaptureFixture) -> None:
    pages = Pages(pages=None)
    with caplog.at_level(logging.WARNING):
        history = await read_history(pages, "classified c1")
    assert len(pages.asked) == MAX_HISTORY_PAGES
    assert not history.complete
    assert len(history.items) == 2 * MAX_HISTORY_PAGES
    assert f"cut at {MAX_HISTORY_PAGES} pages" in caplog.text
    # A page that fits in what was read is still cut from it; one that needs more is not.
    assert history.cut(5, lambda entry: entry.status_id or "") is not None
    keep_none = history.cut(5, lambda entry: entry.status_id or "", keep=lambda _: False)
    assert keep_none is None, "an incomplete history cannot say there is nothing more"


async def test_a_failing_page_fails_the_history() -> None:
    async def load(token: str | None) -> StatusPage[ClassifiedStatusItem]:
        if token is not None:
            raise UpstreamUnavailable("down", upstream="classifieds-v3")
        return StatusPage((item(1),), "t1")

    with pytest.raises(UpstreamUnavailable):
        await read_history(load, "classified c1")


# --- the legacy loader --------------------------------------------------------------------


class Reader:
    """A legacy client stand-in: records its calls; user 3 fails, ad 99 is missing."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[int, ...], bool]] = []

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch:
        self.calls.append((user_id, tuple(ad_ids), force))
        await asyncio.sleep(0)
        if user_id == 3:
            raise UpstreamUnavailable("legacy down", upstream="legacy")
        found = {a: LegacyAdStatus(user_id=user_id, ad_id=a) for a in ad_ids if a != 99}
        return LegacyBatch(user_id, found, frozenset(a for a in ad_ids if a == 99))


async def test_the_loader_asks_once_per_user_and_fails_each_ad_on_its_own() -> None:
    reader = Reader()
    loader = legacy_loader(LegacyStatusCache(reader, ttl_s=0), force=True)
    keys = [LegacyAdKey(1, 10), LegacyAdKey(2, 20), LegacyAdKey(1, 11), LegacyAdKey(1, 99)]
    keys += [LegacyAdKey(3, 30), LegacyAdKey(1, 10)]
    results = await asyncio.gather(*(loader.load(key) for key in keys), return_exceptions=True)
    assert sorted(reader.calls) == [(1, (10, 11, 99), True), (2, (20,), True), (3, (30,), True)]
    found = [r for r in results if isinstance(r, LegacyAdStatus)]
    assert [(r.user_id, r.ad_id) for r in found] == [(1, 10), (2, 20), (1, 11), (1, 10)]
    assert isinstance(results[3], UpstreamNotFound)  # ad 99: missing
    assert isinstance(results[4], UpstreamUnavailable)  # user 3: the whole call failed


class Recording(Reader):
    """`Reader`, noting which task made each call."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[asyncio.Task[object] | None] = []

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch:
        self.tasks.append(asyncio.current_task())
        return await super().ads_status(user_id, ad_ids, force=force)


async def test_load_here_reads_in_the_callers_task_and_shares_its_answer() -> None:
    reader = Recording()
    loader = legacy_loader(LegacyStatusCache(reader, ttl_s=0), force=False)
    status = await loader.load_here(LegacyAdKey(1, 10))
    assert status == LegacyAdStatus(user_id=1, ad_id=10)
    assert reader.tasks == [asyncio.current_task()]
    # The key is answered for the rest of the request, whichever way it is asked again.
    assert await loader.load(LegacyAdKey(1, 10)) is status
    assert await loader.load_here(LegacyAdKey(1, 10)) is status
    # A key the tick's batch is loading already is not read a second time.
    batched = loader.load(LegacyAdKey(1, 11))
    assert await loader.load_here(LegacyAdKey(1, 11)) is await batched
    assert reader.calls == [(1, (10,), False), (1, (11,), False)]
    with pytest.raises(UpstreamUnavailable):
        await loader.load_here(LegacyAdKey(3, 30))  # the read's failure is the key's


class NoV3:
    """A V3 client stand-in whose reads never end (and say when they are cancelled)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def classified_statuses(self, *args: object, **kwargs: object) -> NoReturn:
        self.asked.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.set()
        raise AssertionError("unreachable")

    async def media_statuses(self, *args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("not asked")


def listing_scope(reader: Reader, v3: NoV3) -> ListingRequest:
    service = ListingService(
        v3=v3,  # type: ignore[arg-type]
        legacy=LegacyStatusCache(reader, ttl_s=0),
        cache=PageCache(ttl_s=0, max_entries=10),
        tenant_of=lambda caller: "agency",
        max_listings=10,
    )
    return service.request(Caller())


async def test_a_sole_listing_sends_its_legacy_read_on_its_first_step() -> None:
    ref = ListingRef(legacy=LegacyAdKey(1, 10))
    for sole, read_at_once in ((True, True), (False, False)):
        reader = Recording()
        task = asyncio.ensure_future(
            listing_scope(reader, NoV3()).listings([ref], ListingSelection(legacy=True), sole=sole)
        )
        await asyncio.sleep(0)  # the task's first step, and nothing after it
        assert bool(reader.calls) is read_at_once, f"sole={sole}"
        [data] = await task
        assert data.legacy == LegacyAdStatus(user_id=1, ad_id=10)
        assert reader.tasks == [task] if sole else reader.tasks != [task]


class Stalled(Reader):
    """A legacy API that never answers."""

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_sole_listing_cancelled_during_its_legacy_read_leaves_no_task_behind() -> None:
    v3 = NoV3()
    ref = ListingRef(classified_id="c-1", legacy=LegacyAdKey(1, 10))
    selection = ListingSelection(legacy=True, unified=True)
    task = asyncio.ensure_future(listing_scope(Stalled(), v3).listings([ref], selection, sole=True))
    await v3.asked.wait()  # both reads are under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the cancellation reaches the classified's reads
    # Neither the request's task for the classified nor its page's read goes on: the page
    # was loaded by that task itself, and nobody else waited for it.
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert v3.cancelled.is_set()


# --- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        ListingRef(classified_id="c-1"),
        ListingRef(legacy=LegacyAdKey(12311, 659593)),
        ListingRef(classified_id="a|b:c/é", legacy=LegacyAdKey(1, 2)),
    ],
)
def test_listing_ids_round_trip(ref: ListingRef) -> None:
    assert ids.listing_ref(ids.listing_id(ref)) == ref


@pytest.mark.parametrize(
    "opaque",
    ["", "not base64!", encode_cursor(KeysetCursor(EPOCH, "s1")), "TGlzdGluZzp8"],
)
def test_anything_else_is_not_a_listing_id(opaque: str) -> None:
    with pytest.raises(InvalidInput):
        ids.listing_ref(opaque)


def test_status_ids_are_upstream_ids_or_stable_derivations() -> None:
    assert ids.status_item_id("c1", item(1)) == "s1"
    bare = ClassifiedStatusItem(
        status=ClassifiedStatusCode.CREATED, raw_status="CREATED", message="", status_date=EPOCH
    )
    derived = ids.status_item_id("c1", bare)
    assert derived == ids.status_item_id("c1", bare) != ids.status_item_id("c2", bare)


# --- checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (ListingRef(), "needs classifiedId, legacy, or both"),
        (ListingRef(classified_id="  "), "must not be empty"),
        (ListingRef(classified_id="x" * 257), "at most 256"),
        (ListingRef(classified_id="a\nb"), "printable"),
        (ListingRef(legacy=LegacyAdKey(0, 1)), "positive"),
    ],
)
def test_bad_refs_are_refused(ref: ListingRef, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_ref(ref)


def test_too_many_refs_are_refused_before_any_is_checked() -> None:
    check_refs([ListingRef(classified_id="c")] * 3, 3)
    with pytest.raises(InvalidInput, match="at most 3 refs"):
        check_refs([ListingRef()] * 4, 3)


@pytest.mark.parametrize(("first", "after"), [(0, None), (101, None), (5, "not-a-cursor")])
def test_bad_page_arguments_are_refused(first: int, after: str | None) -> None:
    with pytest.raises(InvalidInput):
        check_page_args(first, after)


def test_ids_are_checked_before_they_travel() -> None:
    check_id("0b6c-uuid", "mediaId")
    with pytest.raises(InvalidInput, match="mediaId"):
        check_id("", "mediaId")
