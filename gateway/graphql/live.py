"""The `Subscription` root: classified status events from the webhook, over WebSocket.

Each subscriber reads the event bus through its own bounded queue (see `gateway.live.bus`).
An event's `listing` is read on demand through the same helper as the root `listing`
query, in a fresh service scope per event, so it shows the state the event brought.
Leaving the subscription (complete, stop, or a closed socket) leaves the bus block, which
unregisters the queue.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import UNSET, Private

from gateway.domain import models
from gateway.domain.errors import InvalidInput
from gateway.graphql.resolvers import GraphQLInfo, load_listings
from gateway.graphql.types import ClassifiedStatus, Listing
from gateway.live.visibility import Visibility
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
