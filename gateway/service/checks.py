"""Argument checks shared by every edge, run before any upstream call is made."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.domain.cursors import decode_cursor
from gateway.domain.errors import InvalidInput
from gateway.domain.models import ClassifiedStatusCode, ListingRef
from gateway.service.histories import MAX_PAGE_SIZE

DEFAULT_PAGE_SIZE = 20
# V3 ids are UUIDs; anything this long or unprintable cannot be one and is not sent upstream.
MAX_ID_CHARS = 256


def check_id(value: str, what: str) -> None:
    if not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidInput(f"{what} must be printable and at most {MAX_ID_CHARS} characters")


def check_ref(ref: ListingRef) -> None:
    if ref.classified_id is None and ref.legacy is None:
        raise InvalidInput("a ListingRef needs classifiedId, legacy, or both")
    if ref.classified_id is not None:
        check_id(ref.classified_id, "classifiedId")
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


def check_status_filter(statuses: Iterable[ClassifiedStatusCode | str]) -> None:
    """`UNKNOWN` stands for statuses the gateway cannot name: V3 cannot filter by it."""
    if any(ClassifiedStatusCode(code) is ClassifiedStatusCode.UNKNOWN for code in statuses):
        raise InvalidInput(
            "UNKNOWN is not a status to filter by: it stands for statuses the gateway does not know"
        )
