"""GraphQL input types and their conversion to domain refs."""

from __future__ import annotations

from typing import Any

import strawberry

from gateway.domain.models import LegacyAdKey, ListingRef


@strawberry.input(name="LegacyAdRef", description="Names an ad of the legacy API.")
class LegacyAdRefInput:
    user_id: int = strawberry.field(description="The legacy user (account) id.")
    ad_id: int = strawberry.field(description="The legacy ad id.")


@strawberry.input(
    name="ListingRef",
    description="Names a listing: its Classifieds V3 classifiedId, its legacy ad, or both "
    "(the same property on both portal families). At least one is required.",
)
class ListingRefInput:
    classified_id: strawberry.ID | None = strawberry.field(
        default=None, description="The Classifieds V3 classifiedId."
    )
    legacy: LegacyAdRefInput | None = strawberry.field(default=None, description="The legacy ad.")

    def to_domain(self) -> ListingRef:
        return ListingRef(
            classified_id=str(self.classified_id) if self.classified_id is not None else None,
            legacy=(
                LegacyAdKey(user_id=self.legacy.user_id, ad_id=self.legacy.ad_id)
                if self.legacy is not None
                else None
            ),
        )


def ref_from_arguments(value: Any) -> ListingRef:
    """A domain ref from a coerced `ListingRef` argument (input object or plain dict)."""
    if isinstance(value, ListingRefInput):
        return value.to_domain()
    classified_id = value.get("classifiedId")
    legacy = value.get("legacy")
    return ListingRef(
        classified_id=str(classified_id) if classified_id is not None else None,
        legacy=LegacyAdKey(user_id=legacy["userId"], ad_id=legacy["adId"]) if legacy else None,
    )
