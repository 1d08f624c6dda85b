"""The service layer: the one thing the edges (GraphQL, gRPC) call.

`ListingService` lives for the process and owns the cross-request page cache;
`ListingRequest` lives for one incoming request and owns that request's loaders, so
one caller's results never reach another. Both edges get the same loaders, cache and
state rules, so their answers cannot drift apart.

Outcomes that may fail on their own (a source of one listing) are returned as
`value | GatewayError`, so one failing listing or upstream never fails the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.cache import PageCache, PageKey
from gateway.checks import check_page_args, check_refs
from gateway.errors import GatewayError, Outcome, capture
from gateway.histories import MAX_PAGE_SIZE, History, page_slice, read_history
from gateway.loaders import LegacyReader, legacy_loader
from gateway.models import (
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
from gateway.state import latest_item, legacy_portal_states, overall_state, v3_portal_states


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
class ListingNeeds:
    """What a caller asked of a listing, so the service reads only what answers it."""

    legacy: bool = False  # the legacy view itself
    unified: bool = False  # portals and state: both sources, the whole V3 history
    history: bool = False  # the whole V3 history, to answer several classified fields at once


@dataclass(frozen=True, slots=True)
class ListingData:
    """Everything read for one listing in one step; each source fails on its own."""

    ref: ListingRef
    legacy: Outcome[LegacyAdStatus] | None
    portals: Outcome[tuple[PortalState, ...]] | None
    state: Outcome[PublicationState] | None


class ListingService:
    """Process-wide: upstream clients, the V3 page cache, the limits."""

    def __init__(
        self,
        *,
        v3: V3Reader,
        legacy: LegacyReader,
        cache: PageCache[Any],
        tenant_of: Callable[[Caller], str],
        max_listings: int,
    ) -> None:
        self.v3 = v3
        self.legacy = legacy
        self.cache = cache
        self.tenant_of = tenant_of
        self.max_listings = max_listings

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
        self._histories: dict[str, asyncio.Task[History[ClassifiedStatusItem]]] = {}
        self._media_histories: dict[tuple[str, str], asyncio.Task[History[MediaStatusItem]]] = {}

    @property
    def tenant(self) -> str:
        # Resolved lazily: in passthrough mode a caller without a token fails only the V3 fields.
        if self._tenant is None:
            self._tenant = self.service.tenant_of(self.caller)
        return self._tenant

    # --- listings -----------------------------------------------------------------

    async def listings(
        self, refs: Sequence[ListingRef], needs: ListingNeeds, *, refresh: bool = False
    ) -> list[ListingData]:
        """Read what `needs` asks for, for all refs at once: one async step per request."""
        check_refs(refs, self.service.max_listings)
        return list(await asyncio.gather(*(self._listing(ref, needs, refresh) for ref in refs)))

    async def _listing(self, ref: ListingRef, needs: ListingNeeds, refresh: bool) -> ListingData:
        legacy_task = (
            capture(self.legacy_ad(ref.legacy, force=refresh))
            if ref.legacy is not None and (needs.legacy or needs.unified or refresh)
            else None
        )
        history_task = (
            capture(self.history(ref.classified_id, refresh=refresh))
            if ref.classified_id is not None and (needs.unified or needs.history or refresh)
            else None
        )
        legacy = await legacy_task if legacy_task is not None else None
        history = await history_task if history_task is not None else None
        portals: Outcome[tuple[PortalState, ...]] | None = None
        state: Outcome[PublicationState] | None = None
        if needs.unified:
            portals = _unified_portals(history, legacy)
            state = portals if isinstance(portals, GatewayError) else overall_state(portals)
        return ListingData(ref=ref, legacy=legacy, portals=portals, state=state)

    async def legacy_ad(self, key: LegacyAdKey, *, force: bool = False) -> LegacyAdStatus:
        loader = self._legacy_forced if force else self._legacy
        return await loader.load(key)

    # --- V3 classified history ------------------------------------------------------

    def history(
        self, classified_id: str, *, refresh: bool = False
    ) -> asyncio.Task[History[ClassifiedStatusItem]]:
        """The classified's whole history, read once per request."""
        task = self._histories.get(classified_id)
        if task is None or refresh:
            task = asyncio.ensure_future(self._read_history(classified_id, refresh))
            self._histories[classified_id] = task
        return task

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

        return await read_history(load_page, f"classified {classified_id}")

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

        page: StatusPage[ClassifiedStatusItem] = await self.service.cache.get_or_load(
            key, load, refresh=refresh
        )
        return page

    async def latest_classified_status(self, classified_id: str) -> ClassifiedStatusItem | None:
        """The item with the greatest statusDate.

        Taken from the history when this request reads it anyway; otherwise one
        `filter=latest` read.
        """
        task = self._histories.get(classified_id)
        if task is not None:
            return (await task).latest()
        page = await self._classified_page(classified_id, latest=True)
        return latest_item(page.items)

    async def classified_statuses(
        self,
        classified_id: str,
        *,
        first: int,
        after: str | None = None,
        statuses: Sequence[ClassifiedStatusCode] = (),
        portals: Sequence[Portal] = (),
    ) -> StatusSlice[ClassifiedStatusItem]:
        check_page_args(first, after)
        status_codes = sorted({code.value for code in statuses})
        portal_codes = sorted({portal.value for portal in portals})
        task = self._histories.get(classified_id)
        if task is not None and after is None:
            cut = (await task).cut(first, _status_filter(status_codes, portal_codes))
            if cut is not None:
                return cut
        page = await self._classified_page(
            classified_id,
            limit=first,
            statuses=status_codes,
            portals=portal_codes,
            next_token=after,
        )
        return page_slice(page)

    # --- V3 media -------------------------------------------------------------------

    def media_history(
        self, classified_id: str, media_id: str
    ) -> asyncio.Task[History[MediaStatusItem]]:
        """The media's whole history, read once per request."""
        key = (classified_id, media_id)
        task = self._media_histories.get(key)
        if task is None:

            def load_page(token: str | None) -> Awaitable[StatusPage[MediaStatusItem]]:
                return self._media_page(
                    classified_id, media_id, limit=MAX_PAGE_SIZE, next_token=token
                )

            task = asyncio.ensure_future(read_history(load_page, f"media {media_id}"))
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

        page: StatusPage[MediaStatusItem] = await self.service.cache.get_or_load(key, load)
        return page

    async def media_statuses(
        self,
        classified_id: str,
        media_id: str,
        *,
        first: int,
        after: str | None = None,
        from_history: bool = False,
    ) -> StatusSlice[MediaStatusItem]:
        """A page of the media's history; cut from the whole history when this request
        reads it anyway (`from_history`: the caller also asked for the latest status)."""
        check_page_args(first, after)
        if after is None and (from_history or (classified_id, media_id) in self._media_histories):
            cut = (await self.media_history(classified_id, media_id)).cut(first)
            if cut is not None:
                return cut
        return page_slice(
            await self._media_page(classified_id, media_id, limit=first, next_token=after)
        )

    async def latest_media_status(
        self, classified_id: str, media_id: str
    ) -> MediaStatusItem | None:
        """Media have no latest filter upstream: the newest item of the whole history."""
        return (await self.media_history(classified_id, media_id)).latest()


def _status_filter(
    statuses: Sequence[str], portals: Sequence[str]
) -> Callable[[ClassifiedStatusItem], bool] | None:
    """What V3's `status` and `portal` parameters keep, for pages cut from a history."""
    if not statuses and not portals:
        return None
    wanted_statuses, wanted_portals = set(statuses), set(portals)

    def keep(item: ClassifiedStatusItem) -> bool:
        return (not wanted_statuses or item.raw_status in wanted_statuses) and (
            not wanted_portals or any(portal.value in wanted_portals for portal in item.portals)
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
        portals.extend(v3_portal_states(history.items))
    if isinstance(legacy, LegacyAdStatus):
        portals.extend(legacy_portal_states(legacy))
    return tuple(portals)
