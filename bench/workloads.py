"""What is asked: the workloads, their GraphQL query, and their listings' references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

LISTING_FIELDS = """
    id
    state
    portals { portal provider state since message actionRequired }
    classified {
      latestStatus { id status subStatus date portals }%s
    }
    legacy {
      portals { portal publish { active online startDate remoteAdId } features { feature active } }
    }"""

HISTORY_FIELDS = """
      statuses(first: 20) {
        nodes { id status subStatus message date portals actionRequired }
        pageInfo { hasNextPage endCursor }
      }"""


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing on both portal families, as the simulator made it."""

    classified_id: str
    user_id: int
    ad_id: int

    def ref(self) -> dict[str, Any]:
        return {
            "classifiedId": self.classified_id,
            "legacy": {"userId": self.user_id, "adId": self.ad_id},
        }


@dataclass(frozen=True, slots=True)
class Workload:
    """`listings` listings of `users` legacy users in one `listings` query."""

    name: str
    listings: int
    users: int
    history: bool = False  # statuses(first: 20) on each listing as well

    @property
    def pool(self) -> str:
        """Workloads of one pool query the same listings (W50 and W50-history)."""
        return f"{self.listings}x{self.users}"

    def query(self) -> str:
        fields = LISTING_FIELDS % (HISTORY_FIELDS if self.history else "")
        return (
            "query Listings($refs: [ListingRef!]!) {\n  listings(refs: $refs) {"
            + fields
            + "\n  }\n}\n"
        )

    def body(self, listings: list[Listing]) -> bytes:
        """The POST /graphql body asking for `listings`."""
        refs = [listing.ref() for listing in listings]
        return orjson.dumps({"query": self.query(), "variables": {"refs": refs}})


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", 1, 1),
        Workload("W50", 50, 1),
        Workload("W50-history", 50, 1, history=True),
        Workload("W200", 200, 4),
        Workload("W1000", 1000, 10),
    )
}
