"""`listing.v1.ListingStatusService`: translates protobuf requests into service calls.

Each call opens one service request scope (its own loaders and memo, the shared page
cache), exactly as one GraphQL request does, so the same work costs the same upstream
calls on both edges. Metadata `x-intermediary-id`, `authorization` and `traceparent`
mean what the HTTP headers mean. A caller's deadline bounds the upstream work: every
upstream operation of the call ends by then (`gateway.infra.deadlines`). An answer read from a
stale cached page (stale-if-error) lists it in `stale`, as GraphQL's `extensions.stale`.
The two watch streams read the event bus (`WatchClassifiedStatus`) and the change feed
(`WatchListings`), as GraphQL's subscriptions do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway.domain import ids
from gateway.domain.errors import GatewayError, InvalidInput, NotFound
from gateway.domain.models import ClassifiedStatusEvent, ListingRef, caller_of
from gateway.grpc import messages
from gateway.grpc.errors import translated
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.grpc.telemetry import mark_partial
from gateway.infra.deadlines import caller_deadline
from gateway.live.bus import EventBus
from gateway.live.changes import ChangeFeed, WatchedChange
from gateway.live.visibility import Visibility
from gateway.service.checks import check_ref, check_refs
from gateway.service.listings import ListingData, ListingRequest, ListingService
from gateway.service.plan import ClassifiedSelection, ListingSelection, PageArgs

Context = grpc.aio.ServicerContext[Any, Any]

# Read-mask paths and what they ask of the service; an empty mask asks for everything.
_STATE, _PORTALS, _LEGACY = "state", "portals", "legacy"
_CLASSIFIED, _LATEST = "classified", "classified.latest_status"
_CLASSIFIED_PATHS = frozenset({_CLASSIFIED, "classified.id", _LATEST})
_PATHS = frozenset({_STATE, _PORTALS, _LEGACY}) | _CLASSIFIED_PATHS
# How much of the caller's input an error message repeats: status details are sent as
# metadata, which clients refuse past a few KiB (8 KiB by default in grpcio).
_MAX_NAMED, _MAX_ECHO_CHARS = 3, 40


def _excerpt(text: str) -> str:
    """`text` as an error message may quote it: printable, at most `_MAX_ECHO_CHARS`."""
    shown = repr(text[:_MAX_ECHO_CHARS])
    return shown + "…" if len(text) > _MAX_ECHO_CHARS else shown


class _Metadata:
    """Invocation metadata read like headers (names are lower case on the wire)."""

    def __init__(self, context: Context) -> None:
        self._values = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }

    def get(self, key: str, /) -> str | None:
        return self._values.get(key)


def _scope(service: ListingService, context: Context) -> ListingRequest:
    return service.request(caller_of(_Metadata(context)))


def _asked(paths: Sequence[str]) -> frozenset[str]:
    unknown = sorted(set(paths) - _PATHS)
    if unknown:
        # The details travel in a header: name a few paths, each cut short, never all of them.
        named = ", ".join(_excerpt(path) for path in unknown[:_MAX_NAMED])
        more = f" and {len(unknown) - _MAX_NAMED} more" if len(unknown) > _MAX_NAMED else ""
        raise InvalidInput(f"read_mask: unknown paths {named}{more}")
    if not paths:
        return frozenset({_STATE, _PORTALS, _LEGACY, _LATEST})
    asked = set(paths)
    if _CLASSIFIED in asked:
        asked.add(_LATEST)
    return frozenset(asked)


def _selection(asked: frozenset[str]) -> ListingSelection:
    """The read mask in the service's terms; the service plans the reads."""
    return ListingSelection(
        legacy=_LEGACY in asked,
        unified=bool(asked & {_STATE, _PORTALS}),
        classified=ClassifiedSelection(latest=_LATEST in asked),
    )


class ListingStatusServicer(pb_grpc.ListingStatusServiceServicer):
    """The gRPC face of `ListingService`; holds no state of its own."""

    def __init__(
        self, service: ListingService, events: EventBus, changes: ChangeFeed | None = None
    ) -> None:
        self.service = service
        self.events = events
        self.changes = changes
        # Set when the server shuts down: open streams end instead of holding the grace period.
        self._closing = asyncio.Event()

    async def close(self) -> None:
        self._closing.set()

    async def _listings(
        self, context: Context, refs: Sequence[pb.ListingRef], read_mask: Sequence[str]
    ) -> list[pb.Listing]:
        asked = _asked(read_mask)
        domain_refs = [messages.ref_of(ref) for ref in refs]
        scope = _scope(self.service, context)
        with caller_deadline(context.time_remaining()):
            data = await scope.listings(domain_refs, _selection(asked), sole=True)
        built = [_listing(item, asked, scope.stale) for item in data]
        failure = _whole_call_failure(built)
        if failure is not None:
            raise failure
        if any(item.failures for item in built):
            mark_partial()
        return [item.message for item in built]

    @translated
    async def GetListing(self, request: pb.GetListingRequest, context: Context) -> pb.Listing:
        return (await self._listings(context, [request.ref], request.read_mask.paths))[0]

    @translated
    async def BatchGetListings(
        self, request: pb.BatchGetListingsRequest, context: Context
    ) -> pb.BatchGetListingsResponse:
        listings = await self._listings(context, request.refs, request.read_mask.paths)
        return pb.BatchGetListingsResponse(listings=listings)

    @translated
    async def ListClassifiedStatuses(
        self, request: pb.ListClassifiedStatusesRequest, context: Context
    ) -> pb.ListClassifiedStatusesResponse:
        classified_id = request.classified_id
        check_ref(ListingRef(classified_id=classified_id))
        statuses = messages.status_codes_of(request.statuses)
        portals = messages.portals_of(request.portals)
        args = PageArgs.of(
            first=request.page_size or None,
            after=request.page_token or None,
            statuses=[code.value for code in statuses],
            portals=[portal.value for portal in portals],
        )
        scope = _scope(self.service, context)
        with caller_deadline(context.time_remaining()):
            page = await scope.classified_statuses(classified_id, args)
        stale_age = scope.stale.get(classified_id)
        return pb.ListClassifiedStatusesResponse(
            statuses=[messages.classified_status(item, classified_id) for item in page.items],
            next_page_token=(page.end_cursor or "") if page.has_next_page else "",
            stale=[] if stale_age is None else [messages.stale_v3(stale_age)],
        )

    @translated
    async def WatchClassifiedStatus(
        self, request: pb.WatchClassifiedStatusRequest, context: Context
    ) -> AsyncIterator[pb.ClassifiedStatusEvent]:
        # As many ids as one `listings` query may name: a stream holds its ids for its life.
        if len(request.classified_ids) > self.service.max_listings:
            raise InvalidInput(
                f"at most {self.service.max_listings} classified_ids in one watch, "
                f"got {len(request.classified_ids)}"
            )
        for classified_id in request.classified_ids:
            check_ref(ListingRef(classified_id=classified_id))
        # A caller V3 cannot be asked for (an agency it may not name, no token in passthrough
        # mode) would never be shown an event: refused now, not event by event.
        self.service.tenant_of(caller_of(_Metadata(context)))
        wanted = frozenset(request.classified_ids) or None
        # Webhook events carry no tenant: only those of classifieds V3 answers for reach it.
        visible = Visibility(lambda: _scope(self.service, context))
        closing = asyncio.ensure_future(self._closing.wait())
        following: asyncio.Future[ClassifiedStatusEvent] | None = None
        try:
            async with self.events.subscribe(wanted) as events:
                # Initial metadata tells the caller the subscription is in place: what the
                # gateway receives from now on reaches it.
                await context.send_initial_metadata(())
                upcoming = aiter(events)
                while True:
                    following = asyncio.ensure_future(anext(upcoming))
                    await asyncio.wait({following, closing}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        return  # the server is shutting down: end the stream cleanly
                    event = following.result()
                    if await visible.allows(event.classified_id):
                        yield messages.status_event(event)
        finally:
            # Also when the caller cancels (the wait is cancelled): no task is left pending.
            closing.cancel()
            if following is not None:
                following.cancel()

    @translated
    async def WatchListings(
        self, request: pb.WatchListingsRequest, context: Context
    ) -> AsyncIterator[pb.ListingChangeEvent]:
        refs = [messages.ref_of(ref) for ref in request.refs]
        if not refs:
            raise InvalidInput("refs must not be empty")
        check_refs(refs, self.service.max_listings)
        asked = _asked(request.read_mask.paths)
        if self.changes is None:
            raise InvalidInput("listing changes are not served here")
        changes = self.changes
        # As WatchClassifiedStatus: a caller V3 cannot be asked for is refused now.
        self.service.tenant_of(caller_of(_Metadata(context)))
        visible = Visibility(lambda: _scope(self.service, context))
        closing = asyncio.ensure_future(self._closing.wait())
        following: asyncio.Future[WatchedChange] | None = None
        try:
            async with changes.subscribe(
                refs, request.after or None, allows=visible.allows
            ) as watched:
                # The watch is in place: what changes from now on reaches the caller.
                await context.send_initial_metadata(())
                upcoming = aiter(watched)
                while True:
                    following = asyncio.ensure_future(anext(upcoming))
                    await asyncio.wait({following, closing}, return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        return  # the server is shutting down: end the stream cleanly
                    change = following.result()
                    scope = _scope(self.service, context)
                    data = await changes.listing(change, scope, _selection(asked))
                    listing = _listing(data, asked, scope.stale).message
                    yield messages.change_event(change.change, change.cursor, listing)
        finally:
            closing.cancel()
            if following is not None:
                following.cancel()


@dataclass(slots=True)
class _Built:
    """A listing message, and how its reads went."""

    message: pb.Listing
    failures: list[GatewayError] = field(default_factory=list)
    reads: int = 0  # upstream-backed fields filled


def _listing(data: ListingData, asked: frozenset[str], stale: Mapping[str, float]) -> _Built:
    """The listing message; `stale` maps a classified id to the age of the oldest stale
    page its answer used."""
    ref = data.ref
    built = _Built(pb.Listing(id=ids.listing_id(ref), ref=messages.ref_message(ref)))
    listing = built.message
    stale_age = None if ref.classified_id is None else stale.get(ref.classified_id)
    if stale_age is not None:
        listing.stale.append(messages.stale_v3(stale_age))

    def failed(path: str, error: GatewayError) -> None:
        built.failures.append(error)
        listing.errors.append(messages.source_error(path, error))

    if _STATE in asked and data.state is not None:
        if isinstance(data.state, GatewayError):
            failed(_STATE, data.state)
        else:
            listing.state = messages.publication_state(data.state)
            built.reads += 1
    if _PORTALS in asked and data.portals is not None:
        if isinstance(data.portals, GatewayError):
            failed(_PORTALS, data.portals)
        else:
            listing.portals.extend(messages.portal_status(p) for p in data.portals)
            built.reads += 1
    if ref.classified_id is not None and asked & _CLASSIFIED_PATHS:
        listing.classified.id = ref.classified_id
        latest = data.classified.latest if data.classified is not None else None
        if isinstance(latest, GatewayError):
            failed(_LATEST, latest)
        elif _LATEST in asked:
            built.reads += 1
            if latest is not None:
                listing.classified.latest_status.CopyFrom(
                    messages.classified_status(latest, ref.classified_id)
                )
    if _LEGACY in asked and data.legacy is not None:
        if isinstance(data.legacy, GatewayError):
            failed(_LEGACY, data.legacy)
        else:
            listing.legacy.CopyFrom(messages.legacy_ad(data.legacy))
            built.reads += 1
    return built


def _whole_call_failure(built: Sequence[_Built]) -> GatewayError | None:
    """A call none of whose reads succeeded fails as a whole: NOT_FOUND only when no
    source knows the listing, else with the first error that says something else (a source
    that could not be read may still know it)."""
    if any(item.reads for item in built):
        return None
    errors = [error for item in built for error in item.failures]
    return next((error for error in errors if not isinstance(error, NotFound)), None) or next(
        iter(errors), None
    )
