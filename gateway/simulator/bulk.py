"""Many listings at once, for load tests: copies of the seeded ones under fresh ids.

Each new listing pairs a copy of a seeded classified of the tenant (its whole history and
media, one page long at `limit=100`, none with the "internal" variant fields) with a copy of
a seeded legacy ad, owned by one of `users` new legacy users in turn. Ids never repeat, so
every call adds listings no cache has seen.
"""

from __future__ import annotations

import uuid

from .data import Listing
from .state import State
from .v3 import MAX_LIMIT

_BULK_NAMESPACE = uuid.UUID("0f4c2b9e-7d1a-4c55-8e2f-6b3a9d0c1e77")
_FIRST_BULK_USER = 100_000
_FIRST_BULK_AD = 10_000_000


def add_listings(state: State, *, count: int, users: int, tenant: str) -> list[Listing]:
    """Add `count` listings of `tenant` spread over `users` new legacy users.

    Raises KeyError for an unknown tenant and ValueError for counts out of range.
    """
    if not 1 <= count <= 50_000 or not 1 <= users <= count:
        raise ValueError("count must be 1..50000 and users 1..count")
    tenants = state.tenants()
    sources = [
        cid
        for cid in tenants[tenant]
        if (record := state.classified(cid)) is not None
        and not record.internal_fields
        and 1 <= len(record.statuses) <= MAX_LIMIT
    ]
    ads = [
        ad["portals"]
        for user in state.legacy_users()
        for ad in state.legacy_ads(user).values()
        if isinstance(ad.get("adId"), int)
    ]
    serial = sum(len(ids) for ids in tenants.values())
    first_user = max(_FIRST_BULK_USER, max(state.legacy_users(), default=0) + 1)
    added: list[Listing] = []
    for index in range(count):
        classified_id = str(uuid.uuid5(_BULK_NAMESPACE, f"{tenant}:{serial + index}"))
        state.copy_classified(sources[index % len(sources)], classified_id)
        user_id = first_user + index % users
        ad_id = _FIRST_BULK_AD + serial + index
        state.put_legacy_ad(user_id, ad_id, ads[index % len(ads)])
        added.append(Listing(classified_id, user_id, ad_id))
    return added
