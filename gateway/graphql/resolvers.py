"""Root resolvers: parse arguments, call the service once, convert the result.

The selection below the root field is read once, up front, into the service's domain
terms (`ListingSelection`); the service plans and gathers every read in one async step,
and every field below resolves synchronously from what was gathered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import strawberry
from graphql.execution.values import VariableValues
from strawberry import UNSET
from strawberry.types import Info

from gateway.domain import ids
from gateway.domain.models import ClassifiedStatusCode as StatusCode
from gateway.domain.models import ListingRef
from gateway.graphql.context import GatewayContext
from gateway.graphql.executor import gathered_root
from gateway.graphql.inputs import ListingRefInput
from gateway.graphql.selections import listing_selection
from gateway.graphql.types import ClassifiedStatusCode, Listing, Node, WebhookSubscription
from gateway.service.listings import ListingRequest
from gateway.service.plan import ListingSelection

GraphQLInfo = Info[GatewayContext, None]


def selection_of(info: GraphQLInfo) -> ListingSelection:
    """What the current root field asks of its listings."""
    raw = info._raw_info
    variables = raw.variable_values
    if not isinstance(variables, VariableValues):
        # strawberry hands resolvers the plain coerced dict.
        variables = VariableValues({}, dict(variables or {}))
    return listing_selection(raw.schema, raw.fragments, variables, raw.field_nodes)


async def load_listings(
    info: GraphQLInfo,
    refs: Sequence[ListingRef],
    *,
    refresh: bool = False,
    scope: ListingRequest | None = None,
) -> list[Listing]:
    """The listings `refs` as the current field's selection asks for them.

    `scope` defaults to the request's; a subscription passes a fresh one per event, so that
    nothing read for an earlier event is reused.
    """
    fresh = refresh or scope is not None
    gathered = None if fresh else gathered_root(info.context, str(info.path.key))
    scope = scope or info.context.listings
    if gathered is not None:
        # The executor's gather step read this root field already, with every other one.
        if isinstance(gathered, BaseException):
            raise gathered
        return [Listing.from_domain(item) for item in gathered]
    data = await scope.listings(refs, selection_of(info), refresh=refresh)
    return [Listing.from_domain(item) for item in data]


@strawberry.type
class Query:
    @strawberry.field(description="One listing, by its classifiedId, its legacy ad, or both.")
    async def listing(self, info: GraphQLInfo, ref: ListingRefInput) -> Listing:
        return (await load_listings(info, [ref.to_domain()]))[0]

    @strawberry.field(
        description="Many listings at once (at most GATEWAY_MAX_LISTINGS refs), in the order "
        "asked. Legacy lookups are batched per user; V3 pages are cached."
    )
    async def listings(self, info: GraphQLInfo, refs: list[ListingRefInput]) -> list[Listing]:
        return await load_listings(info, [ref.to_domain() for ref in refs])

    @strawberry.field(description="Any object by its global id.")
    async def node(self, info: GraphQLInfo, id: strawberry.ID) -> Node | None:
        return (await load_listings(info, [ids.listing_ref(str(id))]))[0]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Reads a listing upstream anew (legacy with force=true, which asks the "
        "portal live) and replaces its cached V3 pages."
    )
    async def refresh_listing(self, info: GraphQLInfo, ref: ListingRefInput) -> Listing:
        return (await load_listings(info, [ref.to_domain()], refresh=True))[0]

    @strawberry.mutation(
        description="Asks Classifieds V3 to post every new classified status of the caller's "
        "agency to `url` (default: this gateway's receiver, GATEWAY_PUBLIC_URL + "
        "/webhooks/v3/{secret}), replacing the agency's earlier subscription. `statuses` limits "
        "the notified statuses (default: all). The answer masks the secret."
    )
    async def subscribe_status_webhook(
        self,
        info: GraphQLInfo,
        statuses: Annotated[
            list[ClassifiedStatusCode] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Notify only these statuses (default: all)."),
        ] = UNSET,
        url: Annotated[
            str | None,
            strawberry.argument(description="Where to post (default: this gateway's receiver)."),
        ] = UNSET,
    ) -> WebhookSubscription:
        context = info.context
        wanted: list[StatusCode] | None = None
        if statuses is not UNSET and statuses is not None:
            wanted = [StatusCode(s) for s in statuses]
        registration = await context.webhooks.subscribe(
            context.listings.caller, wanted, url if _given(url) else None
        )
        return WebhookSubscription.from_domain(registration)

    @strawberry.mutation(
        description="Removes the caller's agency's webhook subscription at Classifieds V3 "
        "(V3 keeps one per agency). `url` defaults to this gateway's receiver."
    )
    async def unsubscribe_status_webhook(
        self,
        info: GraphQLInfo,
        url: Annotated[
            str | None, strawberry.argument(description="Default: this gateway's receiver.")
        ] = UNSET,
    ) -> bool:
        context = info.context
        return await context.webhooks.unsubscribe(
            context.listings.caller, url if _given(url) else None
        )


def _given(value: object) -> bool:
    return value is not UNSET and value is not None
