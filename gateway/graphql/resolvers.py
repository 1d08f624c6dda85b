"""Root resolvers: parse arguments, call the service once, convert the result.

The selection is looked at once, up front, so that one async step reads everything
the listings need (legacy batches, V3 histories) and every field below resolves
synchronously from what was read.
"""

from __future__ import annotations

from collections.abc import Sequence

import strawberry
from strawberry.types import Info

from gateway import ids
from gateway.graphql.context import GatewayContext
from gateway.graphql.inputs import ListingRefInput
from gateway.graphql.selections import fields_of, selected_below
from gateway.graphql.types import Listing, Node
from gateway.models import ListingRef
from gateway.service import ListingNeeds

GraphQLInfo = Info[GatewayContext, None]


# Classified fields that each read V3 on their own when no history is at hand.
_CLASSIFIED_READS = frozenset({"latestStatus", "statuses"})


def needs_of(info: GraphQLInfo) -> ListingNeeds:
    """What the current root field asks of its listings."""
    names: set[str] = set()
    classified_reads = 0
    for field in selected_below(info):
        names.add(field.name)
        if field.name == "classified":
            classified_reads += sum(
                1 for sub in fields_of(field.selections) if sub.name in _CLASSIFIED_READS
            )
    return ListingNeeds(
        legacy="legacy" in names,
        unified=bool(names & {"portals", "state"}),
        # Two or more reads of one classified cost one history read instead: the
        # latest status and short pages are then cut from it.
        history=classified_reads >= 2,
    )


async def load_listings(
    info: GraphQLInfo, refs: Sequence[ListingRef], *, refresh: bool = False
) -> list[Listing]:
    scope = info.context.listings
    data = await scope.listings(refs, needs_of(info), refresh=refresh)
    return [Listing.from_domain(item, scope) for item in data]


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
