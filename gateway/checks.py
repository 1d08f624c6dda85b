"""Argument checks shared by every edge, run before any upstream call is made."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.cursors import decode_cursor
from gateway.errors import InvalidInput
from gateway.histories import MAX_PAGE_SIZE
from gateway.models import ListingRef

DEFAULT_PAGE_SIZE = 20


def check_ref(ref: ListingRef) -> None:
    if ref.classified_id is None and ref.legacy is None:
        raise InvalidInput("a ListingRef needs classifiedId, legacy, or both")
    if ref.classified_id is not None and not ref.classified_id.strip():
        raise InvalidInput("classifiedId must not be empty")
    if ref.legacy is not None and (ref.legacy.user_id <= 0 or ref.legacy.ad_id <= 0):
        raise InvalidInput("legacy userId and adId must be positive")


def check_refs(refs: Sequence[ListingRef], max_listings: int) -> None:
    if len(refs) > max_listings:
        raise InvalidInput(f"at most {max_listings} refs in one listings query, got {len(refs)}")
    for ref in refs:
        check_ref(ref)


def check_page_args(first: int, after: str | None) -> None:
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE_SIZE}, got {first}")
    if after is not None:
        decode_cursor(after)  # raises InvalidInput for anything but a pageInfo.endCursor
