"""The `Subscription` root, over WebSocket: V3 webhook events, and listing changes of both
providers.

`classifiedStatusChanged`: each subscriber reads the event bus through its own bounded
queue (see `gateway.live.bus`). An event's `listing` is read on demand through the same
helper as the root `listing` query, in a fresh service scope per event, so it shows the
state the event brought.

`listingChanged`: each subscriber reads the change feed (`gateway.live.changes`), resuming
after its `after` cursor; an event's `listing` is read on demand through the feed, which
shares one read among the subscribers of a tenant that ask the same of the same event.

Leaving a subscription (complete, stop, or a closed socket) leaves the bus or feed block,
which unregisters the queue.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import UNSET, Private

from gateway.domain import models
from gateway.domain.errors import InvalidInput
from gateway.graphql.inputs import ListingRefInput
from gateway.graphql.resolvers import GraphQLInfo, load_listings, selection_of
from gateway.graphql.types import ClassifiedStatus, Listing, Portal, Provider
from gateway.live.changes import ChangeFeed, WatchedChange
from gateway.live.visibility import Visibility
from gateway.service.checks import check_refs
from gateway.service.listings import ListingRequest


@strawberry.type(
    description="A classified's new Classifieds V3 status, pushed by V3's webhook to this gateway."
)
class ClassifiedStatusEvent:
    classified_id: strawberry.ID = strawberry.field(description="The classified that changed.")
    status: ClassifiedStatus = strawberry.field(
        description="The new status, mapped as in `Classified.statuses`."
    )
    received_at: datetime = strawberry.field(
        description="When this gateway accepted the callback (UTC)."
    )
    _scope: Private[ListingRequest]

    @strawberry.field(
        description="The listing of this classified as it stands now (state, portals, V3 "
        "view), read when asked, after the event has dropped its cached pages."
    )
    async def listing(self, info: GraphQLInfo) -> Listing:
        ref = models.ListingRef(classified_id=str(self.classified_id))
        return (await load_listings(info, [ref], scope=self._scope))[0]

    @classmethod
    def from_domain(
        cls, event: models.ClassifiedStatusEvent, scope: ListingRequest
    ) -> ClassifiedStatusEvent:
        return cls(
            classified_id=strawberry.ID(event.classified_id),
            status=ClassifiedStatus.from_domain(event.status, event.classified_id),
            received_at=event.received_at,
            _scope=scope,
        )


@strawberry.type(
    description="A watched listing changed on either side: a V3 portal's state (from the "
    "webhook), or a legacy portal's publish or feature status (found by polling)."
)
class ListingChangeEvent:
    cursor: str = strawberry.field(
        description="Opaque; `listingChanged(after:)` with it resumes after this event."
    )
    provider: Provider = strawberry.field(  # type: ignore[valid-type]
        description="The side that changed."
    )
    changed_portals: list[Portal] = strawberry.field(  # type: ignore[valid-type]
        description="The portals whose status changed (of that provider)."
    )
    received_at: datetime = strawberry.field(
        description="When this gateway learnt of the change (UTC): the webhook callback, or "
        "the poll that found it."
    )
    _watched: Private[WatchedChange]
    _feed: Private[ChangeFeed]
    _scope: Private[ListingRequest]

    @strawberry.field(
        description="The listing as it stands now, both providers, read when asked (as the "
        "subscription named it: the ref of `refs` this change concerns)."
    )
    async def listing(self, info: GraphQLInfo) -> Listing:
        data = await self._feed.listing(self._watched, self._scope, selection_of(info))
        return Listing.from_domain(data)

    @classmethod
    def from_domain(
        cls, watched: WatchedChange, feed: ChangeFeed, scope: ListingRequest
    ) -> ListingChangeEvent:
        change = watched.change
        return cls(
            cursor=watched.cursor,
            provider=change.provider,
            changed_portals=list(change.portals),
            received_at=change.received_at,
            _watched=watched,
            _feed=feed,
            _scope=scope,
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="New statuses of these classifieds (default: every classified) as V3's "
        "webhook delivers them. A subscriber that does not keep up loses its oldest events."
    )
    async def classified_status_changed(
        self,
        info: GraphQLInfo,
        classified_ids: Annotated[
            list[strawberry.ID] | None,
            strawberry.argument(description="Only these classifieds (default: every one)."),
        ] = UNSET,
    ) -> AsyncGenerator[ClassifiedStatusEvent, None]:
        context = info.context
        # This frame waits for events as long as the subscription lives: `info` would keep
        # the executor that called it (and all it holds) alive with it.
        del info
        if classified_ids is UNSET:
            classified_ids = None
        if classified_ids is not None:
            if not classified_ids:
                raise InvalidInput("classifiedIds must not be empty; leave it out for every one")
            if len(classified_ids) > context.max_listings:
                raise InvalidInput(f"at most {context.max_listings} classifiedIds")
        wanted = None if classified_ids is None else {str(cid) for cid in classified_ids}
        service, caller = context.listings.service, context.listings.caller
        # Webhook events carry no tenant: each reaches only subscribers whose tenant V3
        # answers for that classified.
        visible = Visibility(lambda: service.request(caller))
        async with context.events.subscribe(wanted) as events:
            async for event in events:
                if await visible.allows(event.classified_id):
                    yield ClassifiedStatusEvent.from_domain(event, service.request(caller))

    @strawberry.subscription(
        description="Changes of these listings on either side, each once and in order: V3 "
        "through its webhook, legacy by polling the watched ads (GATEWAY_LEGACY_POLL_S). With "
        "`after` (an event's cursor), the retained changes after it come first, then the live "
        "ones. A cursor whose own or later changes are no longer kept (GATEWAY_EVENT_RETENTION_S) "
        'is refused with `extensions.reason: "cursor_expired"`: reload, then subscribe without '
        "it."
    )
    async def listing_changed(
        self,
        info: GraphQLInfo,
        refs: Annotated[
            list[ListingRefInput],
            strawberry.argument(description="The listings (at most GATEWAY_MAX_LISTINGS)."),
        ],
        after: Annotated[
            str | None,
            strawberry.argument(description="Resume after this `ListingChangeEvent.cursor`."),
        ] = UNSET,
    ) -> AsyncGenerator[ListingChangeEvent, None]:
        context = info.context
        del info  # as above: not kept while waiting
        wanted = [ref.to_domain() for ref in refs]
        if not wanted:
            raise InvalidInput("refs must not be empty")
        check_refs(wanted, context.max_listings)
        feed = context.changes
        if feed is None:
            raise InvalidInput("listing changes are not served here")
        service, caller = context.listings.service, context.listings.caller
        # V3 changes reach only subscribers whose tenant V3 answers for that classified.
        visible = Visibility(lambda: service.request(caller))
        cursor = after if isinstance(after, str) else None
        async with feed.subscribe(wanted, cursor, allows=visible.allows) as changes:
            async for watched in changes:
                yield ListingChangeEvent.from_domain(watched, feed, service.request(caller))
