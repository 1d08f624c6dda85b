"""The service layer: the one thing the edges (GraphQL, gRPC) call.

`ListingService` lives for the process and owns the cross-request caches (V3 pages per
tenant, legacy ad statuses); `ListingRequest` lives for one incoming request and owns that
request's loaders and history reads, so one caller's V3 results never reach another. Both edges get the same loaders, cache and
state rules, so their answers cannot drift apart.

Outcomes that may fail on their own (a source of one listing) are returned as
`value | GatewayError`, so one failing listing or upstream never fails the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.cache.legacy import LegacyStatusCache
from gateway.cache.pages import PageCache, PageKey
from gateway.domain import ids
from gateway.domain.cursors import KeysetCursor, UpstreamCursor
from gateway.domain.errors import GatewayError, Outcome, UpstreamUnavailable, capture
from gateway.domain.models import (
    V3_PORTALS,
    Caller,
    ClassifiedStatusCode,
    ClassifiedStatusItem,
    LegacyAdKey,
    LegacyAdStatus,
    ListingRef,
    MediaStatusItem,
    Portal,
    PortalState,
    PublicationState,
    StatusPage,
    StatusSlice,
)
from gateway.domain.state import latest_item, legacy_portal_states, overall_state, v3_portal_states
from gateway.service.checks import check_page_args, check_refs, check_status_filter
from gateway.service.histories import MAX_PAGE_SIZE, History, HistoryMemo, page_slice, read_history
from gateway.service.loaders import legacy_loader
from gateway.service.plan import (
    ClassifiedSelection,
    ListingSelection,
    MediaSelection,
    PageArgs,
    asked_per_classified,
    reads_whole_history,
)
from gateway.service.plan_cost import check_cost, read_cost

T = TypeVar("T")


class V3Reader(Protocol):
    """What the service needs of the Classifieds V3 client."""

    async def classified_statuses(
        self,
        caller: Caller,
        classified_id: str,
        *,
        latest: bool = False,
        current: bool = False,
        statuses: Sequence[str] = (),
        portals: Sequence[str] = (),
        limit: int | None = None,
        next_token: str | None = None,
    ) -> StatusPage[ClassifiedStatusItem]: ...

    async def media_statuses(
        self,
        caller: Caller,
        classified_id: str,
        media_id: str,
        *,
        limit: int | None = None,
        next_token: str | None = None,
    ) -> StatusPage[MediaStatusItem]: ...


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaData:
    """Everything read for one media; each read fails on its own."""

    media_id: str
    latest: Outcome[MediaStatusItem | None] | None = None
    pages: Mapping[PageArgs, Outcome[StatusSlice[MediaStatusItem]]] = field(default_factory=dict)

    def page(self, args: PageArgs) -> StatusSlice[MediaStatusItem]:
        return _gathered(self.pages, args)


@dataclass(frozen=True, slots=True)
class ClassifiedData:
    """Everything read for one classified; each read fails on its own."""

    classified_id: str
    latest: Outcome[ClassifiedStatusItem | None] | None = None
    pages: Mapping[PageArgs, Outcome[StatusSlice[ClassifiedStatusItem]]] = field(
        default_factory=dict
    )
    media: Mapping[str, MediaData] = field(default_factory=dict)

    def page(self, args: PageArgs) -> StatusSlice[ClassifiedStatusItem]:
        return _gathered(self.pages, args)

    def media_data(self, media_id: str) -> MediaData:
        try:
            return self.media[media_id]
        except KeyError:
            raise NotGathered(f"media {media_id} was not gathered") from None


@dataclass(frozen=True, slots=True)
class ListingData:
    """Everything read for one listing in one step; each source fails on its own."""

    ref: ListingRef
    legacy: Outcome[LegacyAdStatus] | None
    portals: Outcome[tuple[PortalState, ...]] | None
    state: Outcome[PublicationState] | None
    classified: ClassifiedData | None = None


class NotGathered(LookupError):
    """A projection asked for something its selection did not name: a planning bug."""


def _gathered(pages: Mapping[PageArgs, Outcome[StatusSlice[T]]], args: PageArgs) -> StatusSlice[T]:
    try:
        outcome = pages[args]
    except KeyError:
        raise NotGathered(f"no page was gathered for {args}") from None
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


class ListingService:
    """Process-wide: upstream clients, the V3 page cache, the legacy status cache, the limits.

    `legacy` is the legacy client behind its cache: ads' answers shared across requests for
    GATEWAY_LEGACY_CACHE_TTL_S (or, with a TTL of 0, read anew for every request).
    """

    def __init__(
        self,
        *,
        v3: V3Reader,
        legacy: LegacyStatusCache,
        cache: PageCache[Any],
        tenant_of: Callable[[Caller], str],
        max_listings: int,
        max_upstream_cost: int | None = None,
    ) -> None:
        self.v3 = v3
        self.legacy = legacy
        self.cache = cache
        self.tenant_of = tenant_of
        self.max_listings = max_listings
        # The most upstream reads one call of `listings` may plan (None: no bound). The
        # GraphQL edge holds a whole operation's sum against it before execution; gRPC
        # calls are priced here, with the same estimate (`gateway.service.plan_cost`).
        self.max_upstream_cost = max_upstream_cost
        self.histories = HistoryMemo()

    def request(self, caller: Caller) -> ListingRequest:
        """A scope for one incoming request: its own loaders and memo."""
        return ListingRequest(self, caller)

    def drop_classified(self, classified_id: str) -> int:
        """Forget every cached page of a classified, for every tenant (ids are unique)."""
        return self.cache.drop_classified(classified_id)


class ListingRequest:
    """One incoming request's view of the service. Not shared across requests."""

    def __init__(self, service: ListingService, caller: Caller) -> None:
        self.service = service
        self.caller = caller
        self._tenant: str | None = None
        self._legacy = legacy_loader(service.legacy, force=False)
        self._legacy_forced = legacy_loader(service.legacy, force=True)
        self._histories: dict[str, asyncio.Future[History[ClassifiedStatusItem]]] = {}
        # Classifieds that several root fields ask, together enough to read whole (`expect`).
        self._whole: set[str] = set()
        self._media_histories: dict[tuple[str, str], asyncio.Future[History[MediaStatusItem]]] = {}
        # classified id -> age in seconds of the oldest stale page served for it.
        self.stale: dict[str, float] = {}

    @property
    def tenant(self) -> str:
        # Resolved lazily: in passthrough mode a caller without a token fails only the V3 fields.
        if self._tenant is None:
            self._tenant = self.service.tenant_of(self.caller)
        return self._tenant

    def prime_legacy(self, status: LegacyAdStatus) -> None:
        """Answer this request's reads of that ad with `status` (just read by someone else,
        e.g. the legacy poller) instead of asking the legacy API again. Not for a refresh."""
        self._legacy.prime(LegacyAdKey(status.user_id, status.ad_id), status)

    # --- listings: the one entry point of the edges ---------------------------------

    def expect(self, asks: Sequence[tuple[Sequence[ListingRef], ListingSelection]]) -> None:
        """What each root field of the request will ask (`listings` calls to come), so a
        classified is planned once for all of them: asked its latest status by one and a
        page by another, it is read whole, once (one V3 read for a one-page history),
        instead of once for each. `plan_cost.request_cost` prices the same plan."""
        for classified_id, asked in asked_per_classified(asks).items():
            if reads_whole_history(asked.classified, unified=asked.unified, refresh=False):
                self._whole.add(classified_id)

    async def listings(
        self,
        refs: Sequence[ListingRef],
        selection: ListingSelection,
        *,
        refresh: bool = False,
        sole: bool = False,
    ) -> list[ListingData]:
        """Read what `selection` asks of every ref, all at once: one async step.

        Legacy ads go through this request's loader (so they batch per user), V3 pages
        through the page cache; a classified's history is read once however many things
        need it, and the latest status and pages are then cut from it. `sole`: nothing else
        of this request reads meanwhile (one root field, one gRPC call), so one listing's
        legacy ad is read by the calling task at once instead of batched a turn later.
        """
        check_refs(refs, self.service.max_listings)
        for page in _pages_of(selection):
            check_page_args(page.first, page.after)
            check_status_filter(page.statuses)
        if self.service.max_upstream_cost is not None:
            check_cost(read_cost(refs, selection, refresh=refresh), self.service.max_upstream_cost)
        if len(refs) == 1:
            # The listing a frontend asks for most: no task to run one read beside nothing.
            return [await self._listing(refs[0], selection, refresh, sole=sole)]
        return list(await asyncio.gather(*(self._listing(ref, selection, refresh) for ref in refs)))

    async def classified_statuses(
        self, classified_id: str, args: PageArgs
    ) -> StatusSlice[ClassifiedStatusItem]:
        """One page of a classified's history (a convenience over `listings`)."""
        selection = ListingSelection(classified=ClassifiedSelection(pages=(args,)))
        [data] = await self.listings([ListingRef(classified_id=classified_id)], selection)
        assert data.classified is not None
        return data.classified.page(args)

    async def _listing(
        self, ref: ListingRef, selection: ListingSelection, refresh: bool, *, sole: bool = False
    ) -> ListingData:
        wants_legacy = selection.legacy or selection.unified or refresh
        loader = self._legacy_forced if refresh else self._legacy
        legacy: Outcome[LegacyAdStatus] | None = None
        if ref.legacy is not None and wants_legacy and sole:
            # Under load every turn of the event loop waits behind every other request's
            # work: the legacy call goes out from this task now, the classified's reads
            # (cached, most often) run in a task beside it.
            legacy_here = loader.load_here(ref.legacy)
            if ref.classified_id is None:
                return self._assembled(ref, selection, None, await capture(legacy_here))
            reading = asyncio.ensure_future(self._classified(ref.classified_id, selection, refresh))
            try:
                legacy = await capture(legacy_here)
            except BaseException:
                if not reading.cancel() and not reading.cancelled():
                    reading.exception()  # it ended first, and its failure goes unheard
                raise
            return self._assembled(ref, selection, await reading, legacy)
        # The loader's future is asked for first: the load joins this tick's batch while
        # the classified's reads go on.
        legacy_load = loader.load(ref.legacy) if ref.legacy is not None and wants_legacy else None
        classified = (
            await self._classified(ref.classified_id, selection, refresh)
            if ref.classified_id is not None
            else None
        )
        if legacy_load is not None:
            legacy = await capture(legacy_load)
        return self._assembled(ref, selection, classified, legacy)

    @staticmethod
    def _assembled(
        ref: ListingRef,
        selection: ListingSelection,
        classified: tuple[Outcome[History[ClassifiedStatusItem]] | None, ClassifiedData] | None,
        legacy: Outcome[LegacyAdStatus] | None,
    ) -> ListingData:
        portals: Outcome[tuple[PortalState, ...]] | None = None
        state: Outcome[PublicationState] | None = None
        if selection.unified:
            history = None if classified is None else classified[0]
            portals = _unified_portals(history, legacy)
            state = portals if isinstance(portals, GatewayError) else overall_state(portals)
        return ListingData(
            ref=ref,
            legacy=legacy,
            portals=portals,
            state=state,
            classified=None if classified is None else classified[1],
        )

    # --- V3 classified ----------------------------------------------------------------

    async def _classified(
        self, classified_id: str, selection: ListingSelection, refresh: bool
    ) -> tuple[Outcome[History[ClassifiedStatusItem]] | None, ClassifiedData]:
        """The classified's reads, planned: its history when it answers two or more asks."""
        asked = selection.classified
        use_history = (
            reads_whole_history(asked, unified=selection.unified, refresh=refresh)
            or classified_id in self._histories
            or classified_id in self._whole
        )
        history = self._history(classified_id, refresh=refresh) if use_history else None

        def id_of(item: ClassifiedStatusItem) -> str:
            return ids.status_item_id(classified_id, item)

        read: Outcome[History[ClassifiedStatusItem]] | None = (
            None if history is None else await capture(history)
        )
        whole = read if isinstance(read, History) else None

        async def latest() -> ClassifiedStatusItem | None:
            page = await self._classified_page(classified_id, latest=True, refresh=refresh)
            return latest_item(page.items)

        async def page(args: PageArgs) -> StatusSlice[ClassifiedStatusItem]:
            cursor = args.cursor
            # No V3 status lists a legacy portal: V3 would refuse the code, while a page
            # cut from a history read keeps nothing for it. Both answer as the cut does.
            portals = [portal.value for portal in args.portals if portal in V3_PORTALS]
            if args.portals and not portals:
                return StatusSlice((), has_previous_page=args.after is not None)
            answer = await self._classified_page(
                classified_id,
                limit=args.first,
                statuses=[code.value for code in args.statuses],
                portals=portals,
                next_token=cursor.token if isinstance(cursor, UpstreamCursor) else None,
            )
            return page_slice(answer, id_of, later=args.after is not None)

        # What the history answers costs nothing more; the rest is read together.
        reads: dict[object, Awaitable[Any]] = {}
        latest_outcome: Outcome[ClassifiedStatusItem | None] | None = None
        if asked.latest:
            if isinstance(read, GatewayError):
                latest_outcome = read
            elif whole is not None and whole.complete:
                latest_outcome = whole.latest()
            else:
                # A history cut at its page bound may lack the newest item (V3's order is
                # not promised): V3's own latest filter names it.
                reads["latest"] = latest()
        pages: dict[PageArgs, Outcome[StatusSlice[ClassifiedStatusItem]]] = {}
        for args in asked.pages:
            cursor = args.cursor
            if read is not None and not isinstance(cursor, UpstreamCursor):
                if isinstance(read, GatewayError):
                    pages[args] = read
                    continue
                keep = _status_filter(args.statuses, args.portals)
                cut = read.cut(args.first, _ids_of(read, classified_id), keep, cursor)
                if cut is not None:
                    pages[args] = cut
                    continue
            reads[args] = page(args)
        for media in asked.media:
            reads[media] = self._media(classified_id, media)
        results = dict(zip(reads, await _together(reads.values()), strict=True))
        if "latest" in results:
            latest_outcome = results["latest"]
        data = ClassifiedData(
            classified_id=classified_id,
            latest=latest_outcome,
            pages={args: results[args] if args in results else pages[args] for args in asked.pages},
            media={media.media_id: results[media] for media in asked.media},
        )
        return read, data

    def _history(
        self, classified_id: str, *, refresh: bool = False
    ) -> Awaitable[History[ClassifiedStatusItem]]:
        """The classified's whole history, read once per request.

        The first asker reads it (no task of its own: a warm read never waits); anyone
        asking meanwhile, e.g. another root field, awaits the same future.
        """
        shared = self._histories.get(classified_id)
        if shared is not None and not refresh:
            return shared
        future: asyncio.Future[History[ClassifiedStatusItem]] = (
            asyncio.get_running_loop().create_future()
        )
        self._histories[classified_id] = future
        return _settle(future, self._read_history(classified_id, refresh))

    async def _read_history(
        self, classified_id: str, refresh: bool
    ) -> History[ClassifiedStatusItem]:
        if refresh:
            # This tenant's pages only: later pages of the old history must not outlive it.
            self.service.cache.drop_classified(classified_id, tenant=self.tenant)

        def load_page(token: str | None) -> Awaitable[StatusPage[ClassifiedStatusItem]]:
            return self._classified_page(
                classified_id, limit=MAX_PAGE_SIZE, next_token=token, refresh=refresh
            )

        return await read_history(load_page, f"classified {classified_id}", self.service.histories)

    async def _classified_page(
        self,
        classified_id: str,
        *,
        limit: int | None = None,
        latest: bool = False,
        statuses: Sequence[str] = (),
        portals: Sequence[str] = (),
        next_token: str | None = None,
        refresh: bool = False,
    ) -> StatusPage[ClassifiedStatusItem]:
        key = PageKey(
            self.tenant,
            "classified",
            classified_id,
            params=PageKey.query(
                {
                    "limit": limit,
                    "latest": latest,
                    "status": tuple(statuses),
                    "portal": tuple(portals),
                }
            ),
            next_token=next_token,
        )

        def load() -> Awaitable[StatusPage[ClassifiedStatusItem]]:
            return self.service.v3.classified_statuses(
                self.caller,
                classified_id,
                latest=latest,
                statuses=statuses,
                portals=portals,
                limit=limit,
                next_token=next_token,
            )

        page: StatusPage[ClassifiedStatusItem] = await self._cached(key, load, refresh=refresh)
        return page

    # --- V3 media -------------------------------------------------------------------

    async def _media(self, classified_id: str, asked: MediaSelection) -> MediaData:
        """A media's reads, planned: its whole history when the latest status or two or
        more pages are asked (media have no latest filter upstream)."""
        media_id = asked.media_id
        fresh = [args for args in asked.pages if args.after is None]
        keyset = any(isinstance(args.cursor, KeysetCursor) for args in asked.pages)
        use_history = asked.latest or keyset or len(fresh) >= 2
        history = self._media_history(classified_id, media_id) if use_history else None

        def id_of(item: MediaStatusItem) -> str:
            return ids.status_item_id(media_id, item)

        async def latest() -> MediaStatusItem | None:
            assert history is not None
            return (await history).latest()

        async def page(args: PageArgs) -> StatusSlice[MediaStatusItem]:
            cursor = args.cursor
            if history is not None and not isinstance(cursor, UpstreamCursor):
                whole = await history
                cut = whole.cut(args.first, _ids_of(whole, media_id), after=cursor)
                if cut is not None:
                    return cut
            token = cursor.token if isinstance(cursor, UpstreamCursor) else None
            read = await self._media_page(
                classified_id, media_id, limit=args.first, next_token=token
            )
            return page_slice(read, id_of, later=args.after is not None)

        reads: dict[object, Awaitable[Any]] = {args: page(args) for args in asked.pages}
        if asked.latest:
            reads["latest"] = latest()
        results = dict(zip(reads, await _together(reads.values()), strict=True))
        return MediaData(
            media_id=media_id,
            latest=results.get("latest"),
            pages={args: results[args] for args in asked.pages},
        )

    def _media_history(
        self, classified_id: str, media_id: str
    ) -> asyncio.Future[History[MediaStatusItem]]:
        """The media's whole history, read once per request."""
        key = (classified_id, media_id)
        task = self._media_histories.get(key)
        if task is None:

            def load_page(token: str | None) -> Awaitable[StatusPage[MediaStatusItem]]:
                return self._media_page(
                    classified_id, media_id, limit=MAX_PAGE_SIZE, next_token=token
                )

            task = asyncio.ensure_future(
                read_history(load_page, f"media {media_id}", self.service.histories)
            )
            self._media_histories[key] = task
        return task

    async def _media_page(
        self, classified_id: str, media_id: str, *, limit: int, next_token: str | None
    ) -> StatusPage[MediaStatusItem]:
        key = PageKey(
            self.tenant,
            "media",
            classified_id,
            media_id,
            params=PageKey.query({"limit": limit}),
            next_token=next_token,
        )

        def load() -> Awaitable[StatusPage[MediaStatusItem]]:
            return self.service.v3.media_statuses(
                self.caller, classified_id, media_id, limit=limit, next_token=next_token
            )

        page: StatusPage[MediaStatusItem] = await self._cached(key, load)
        return page

    async def _cached(
        self, key: PageKey, load: Callable[[], Awaitable[T]], *, refresh: bool = False
    ) -> T:
        """A page through the cache; when V3 cannot answer, a stale copy if one is allowed.

        Stale-if-error: a page past its TTL but within the stale window is better than an
        error, and the response says so (`extensions.stale`). Never for a refresh, which
        asked for the upstream's answer, and never for a refusal (4xx), only for an
        upstream that is unavailable.
        """
        try:
            page: T = await self.service.cache.get_or_load(key, load, refresh=refresh)
        except UpstreamUnavailable:
            kept = None if refresh else self.service.cache.stale(key)
            if kept is None:
                raise
            page, age = kept
            self.stale[key.classified_id] = max(age, self.stale.get(key.classified_id, 0.0))
        return page


async def _settle(future: asyncio.Future[T], read: Awaitable[T]) -> T:
    """Await `read` and hand its outcome to `future`'s other waiters too."""
    try:
        value = await read
    except BaseException as exc:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may be waiting
        raise
    if not future.done():
        future.set_result(value)
    return value


def _ids_of(history: History[Any], owner_id: str) -> Callable[[Any], str]:
    """The public id of each item of `history`, worked out once per history (derived ids
    are a hash each) and kept with it."""
    key = f"ids:{owner_id}"
    table: dict[int, str] | None = history.derived.get(key)
    if table is None:
        table = {id(item): ids.status_item_id(owner_id, item) for item in history.items}
        history.derived[key] = table
    return lambda item: table[id(item)]


async def _together(reads: Iterable[Awaitable[Any]]) -> list[Any]:
    """Each read's outcome; reads run concurrently, without a task when there is one."""
    pending = list(reads)
    if len(pending) <= 1:
        return [await capture(read) for read in pending]
    return list(await asyncio.gather(*(capture(read) for read in pending)))


def _pages_of(selection: ListingSelection) -> Iterator[PageArgs]:
    yield from selection.classified.pages
    for media in selection.classified.media:
        yield from media.pages


def _status_filter(
    statuses: Sequence[ClassifiedStatusCode], portals: Sequence[Portal]
) -> Callable[[ClassifiedStatusItem], bool] | None:
    """What V3's `status` and `portal` parameters keep, for pages cut from a history.

    The one place where V3's filter semantics are assumed (docs/upstreams.md: V3 says only
    "keep only these statuses / portals"; the simulator does the same): `status` keeps
    an item whose status is one of the list; `portal` keeps an item that lists at least
    one of the portals (an item without portals never matches); both together keep what
    both keep. `UNKNOWN` is refused before this is reached (`check_status_filter`).
    """
    if not statuses and not portals:
        return None
    wanted_statuses = {code.value for code in statuses}
    wanted_portals = set(portals)

    def keep(item: ClassifiedStatusItem) -> bool:
        return (not wanted_statuses or item.raw_status in wanted_statuses) and (
            not wanted_portals or any(portal in wanted_portals for portal in item.portals)
        )

    return keep


def _unified_portals(
    history: Outcome[History[ClassifiedStatusItem]] | None, legacy: Outcome[LegacyAdStatus] | None
) -> Outcome[tuple[PortalState, ...]]:
    for source in (history, legacy):
        if isinstance(source, GatewayError):
            return source
    portals: list[PortalState] = []
    if isinstance(history, History):
        states = history.derived.get("portal_states")
        if states is None:
            states = history.derived["portal_states"] = tuple(v3_portal_states(history.items))
        portals.extend(states)
    if isinstance(legacy, LegacyAdStatus):
        portals.extend(legacy_portal_states(legacy))
    return tuple(portals)
