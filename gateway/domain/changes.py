"""Listing changes: what `listingChanged` and gRPC `WatchListings` stream, and their cursors.

A `ListingChange` says that something a client sees of one side of a listing changed: the
unified state of a V3 portal (from a webhook event), or a legacy portal's publish or feature
status (found by polling). Changes are kept in a log (`gateway.live.changelog`) where each
has a position; a `ChangeCursor` names a log and a position in it, opaque to callers.

Cursors are versioned (`lc1`) and name their log: a process's own log is named by an epoch
drawn at its start, the shared Redis log by an epoch kept in Redis. A cursor of another log
(another process, a restarted one, a flushed Redis) is recognised as one whose events are
gone, `CursorExpired`, never read as a position in the wrong log.

Pure functions and frozen dataclasses; nothing here imports a framework.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from typing import Any

from gateway.domain.errors import InvalidInput
from gateway.domain.models import (
    ClassifiedStatusItem,
    LegacyAdKey,
    LegacyAdStatus,
    ListingRef,
    Portal,
    Provider,
    PublicationState,
)
from gateway.domain.state import classified_item_state

_VERSION = "lc1"
_LOG_NAME = re.compile(r"^[A-Za-z0-9]{1,40}$")
_POSITION = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_NOT_A_CURSOR = "after takes the cursor of a ListingChangeEvent"


@dataclass(frozen=True, slots=True)
class ListingChange:
    """One side of a listing changed as a client sees it.

    A V3 change names its `classified_id`, a legacy change its `legacy` ad; `portals` are the
    portals whose status changed, in `Portal` order. A legacy change carries the status it
    was found in (`legacy_status`), so whoever shows the listing need not ask legacy again.
    """

    provider: Provider
    portals: tuple[Portal, ...]
    received_at: datetime
    classified_id: str | None = None
    legacy: LegacyAdKey | None = None
    legacy_status: LegacyAdStatus | None = None

    def concerns(self, ref: ListingRef) -> bool:
        """Whether `ref` names the listing this change is about."""
        if self.classified_id is not None and ref.classified_id == self.classified_id:
            return True
        return self.legacy is not None and ref.legacy == self.legacy


def change_key(change: ListingChange) -> str:
    """The index key of a change (see `ref_keys`)."""
    if change.classified_id is not None:
        return classified_key(change.classified_id)
    assert change.legacy is not None
    return legacy_key(change.legacy)


def classified_key(classified_id: str) -> str:
    return f"c:{classified_id}"


def legacy_key(ad: LegacyAdKey) -> str:
    return f"l:{ad.user_id}:{ad.ad_id}"


def ref_keys(ref: ListingRef) -> tuple[str, ...]:
    """The index keys under which changes of `ref` are found."""
    keys: list[str] = []
    if ref.classified_id is not None:
        keys.append(classified_key(ref.classified_id))
    if ref.legacy is not None:
        keys.append(legacy_key(ref.legacy))
    return tuple(keys)


# --- positions and cursors ------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class LogPosition:
    """Where an entry sits in its log: a sequence number (in process) or a Redis stream id."""

    major: int
    minor: int = 0

    def __str__(self) -> str:
        return f"{self.major}-{self.minor}"

    @classmethod
    def parse(cls, text: str) -> LogPosition:
        match = _POSITION.match(text)
        if match is None:
            raise ValueError(f"not a log position: {text!r}")
        return cls(int(match[1]), int(match[2]))


@dataclass(frozen=True, slots=True)
class ChangeCursor:
    """A position in one named log; `encode()` is what callers see."""

    log: str
    position: LogPosition

    def encode(self) -> str:
        text = f"{_VERSION}:{self.log}:{self.position}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_change_cursor(opaque: str) -> ChangeCursor:
    """The cursor behind an `encode()` string; `InvalidInput` for anything else."""
    if not _ALPHABET.match(opaque):
        raise InvalidInput(_NOT_A_CURSOR)
    try:
        text = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(_NOT_A_CURSOR) from None
    parts = text.split(":")
    if len(parts) != 3 or parts[0] != _VERSION or not _LOG_NAME.match(parts[1]):
        raise InvalidInput(_NOT_A_CURSOR)
    try:
        return ChangeCursor(parts[1], LogPosition.parse(parts[2]))
    except ValueError:
        raise InvalidInput(_NOT_A_CURSOR) from None


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """A change as the log holds it: where it is, and what it is."""

    cursor: ChangeCursor
    change: ListingChange


# --- what counts as a change ----------------------------------------------------------


Fingerprints = Mapping[Portal, str]


def legacy_fingerprints(ad: LegacyAdStatus | None) -> dict[Portal, str]:
    """Per known portal, a short digest of everything a client sees of it (every publish and
    feature field). Two polls of an ad differ for a portal exactly when its digests do.
    Stable across processes: it is compared with digests other replicas stored."""
    if ad is None:
        return {}
    digests: dict[Portal, str] = {}
    for entry in ad.portals:
        if entry.portal is None:
            continue  # a portal the enum lacks is not shown, so its changes are not either
        canonical = repr(_canonical((entry.publish, entry.features)))
        digests[entry.portal] = hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()
    return digests


def changed_portals(before: Fingerprints, after: Fingerprints) -> tuple[Portal, ...]:
    """The portals added, removed or changed between two fingerprints, in `Portal` order."""
    return tuple(
        portal for portal in Portal if portal in before or portal in after
        if before.get(portal) != after.get(portal)
    )  # fmt: skip


def _canonical(value: Any) -> Any:
    """Plain values only (dates as ISO text), so the digest does not depend on reprs of
    time zones or classes."""
    if is_dataclass(value) and not isinstance(value, type):
        return tuple((f.name, _canonical(getattr(value, f.name))) for f in fields(value))
    if isinstance(value, tuple | list):
        return tuple(_canonical(item) for item in value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class PortalMark:
    """What is known of a V3 portal: its unified state, and since when."""

    state: PublicationState
    since: datetime


def v3_marks(item: ClassifiedStatusItem) -> dict[Portal, PortalMark]:
    """The state one V3 status puts each of its portals in (none for a status we do not know)."""
    state = classified_item_state(item) if item.known else None
    if state is None:
        return {}
    return {portal: PortalMark(state, item.status_date) for portal in item.portals}


def merge_v3_marks(
    known: Mapping[Portal, PortalMark], new: Mapping[Portal, PortalMark]
) -> tuple[dict[Portal, PortalMark], tuple[Portal, ...]]:
    """`known` updated with `new`, and the portals whose state changed.

    A portal not known before changed (the first event of a classified is a change); an
    event older than what is known of a portal says nothing about it (upstream order is not
    trusted); a newer event in the same state only moves `since`, which is not a change.
    """
    merged = dict(known)
    changed: list[Portal] = []
    for portal, mark in new.items():
        before = known.get(portal)
        if before is not None and mark.since < before.since:
            continue
        merged[portal] = mark
        if before is None or before.state is not mark.state:
            changed.append(portal)
    return merged, tuple(portal for portal in Portal if portal in changed)
