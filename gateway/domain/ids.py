"""Stable, opaque identifiers the gateway hands out: listing ids, status ids, edge cursors.

Transport-neutral so that GraphQL's `node(id:)` and gRPC agree on what an id means.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from datetime import datetime

from gateway.domain.errors import InvalidInput
from gateway.domain.models import ClassifiedStatusItem, LegacyAdKey, ListingRef, MediaStatusItem

_LISTING_PREFIX = "Listing:"


def _b64encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _b64decode(text: str) -> str:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode()).decode()


def listing_id(ref: ListingRef) -> str:
    """An opaque id that `listing_ref` turns back into the same ref."""
    legacy = f"{ref.legacy.user_id}:{ref.legacy.ad_id}" if ref.legacy else ""
    # The classified id goes last: it is the only part that may contain any character.
    return _b64encode(f"{_LISTING_PREFIX}{legacy}|{ref.classified_id or ''}")


def listing_ref(opaque: str) -> ListingRef:
    """The ref behind a `listing_id`; `InvalidInput` for anything else."""
    try:
        text = _b64decode(opaque)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("not a listing id") from None
    if not text.startswith(_LISTING_PREFIX) or "|" not in text:
        raise InvalidInput("not a listing id")
    legacy_part, classified_id = text.removeprefix(_LISTING_PREFIX).split("|", 1)
    legacy: LegacyAdKey | None = None
    if legacy_part:
        try:
            user_id, ad_id = (int(part) for part in legacy_part.split(":"))
        except ValueError:
            raise InvalidInput("not a listing id") from None
        legacy = LegacyAdKey(user_id=user_id, ad_id=ad_id)
    ref = ListingRef(classified_id=classified_id or None, legacy=legacy)
    if ref.classified_id is None and ref.legacy is None:
        raise InvalidInput("not a listing id")
    return ref


# The same cached items are answered again and again (a board's latest statuses): their ids
# are kept rather than hashed anew for every request (~3 us each).
@functools.lru_cache(maxsize=8192)
def derived_status_id(owner_id: str, date: datetime, status: str) -> str:
    """A stable id for a status item the upstream sent without a statusId."""
    digest = hashlib.sha256(f"{owner_id}\x00{date.isoformat()}\x00{status}".encode()).hexdigest()
    return f"s-{digest[:32]}"


def status_item_id(owner_id: str, item: ClassifiedStatusItem | MediaStatusItem) -> str:
    """The public id of a status item of a classified or media named `owner_id`."""
    return item.status_id or derived_status_id(owner_id, item.status_date, item.raw_status)
