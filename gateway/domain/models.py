"""Domain models: what the gateway knows about a listing, free of any transport.

Plain frozen dataclasses and string enums. Nothing here imports strawberry, grpc or
aiohttp; upstream clients parse wire payloads into these, and each edge converts them
into its own types. A value an upstream sends that an enum lacks is kept as its raw
string next to an `UNKNOWN` member, so nothing is lost and nothing crashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, Protocol, TypeVar


class Portal(StrEnum):
    """Every portal either upstream publishes to."""

    SL = "SL"
    BU = "BU"
    COM = "COM"
    BD = "BD"
    LR = "LR"
    LI = "LI"
    SLC = "SLC"
    SLN = "SLN"
    MARKTPLAATS = "MARKTPLAATS"
    TWEEDEHANDS = "TWEEDEHANDS"
    WEBSITE = "WEBSITE"


V3_PORTALS: frozenset[Portal] = frozenset(
    {Portal.SL, Portal.BU, Portal.COM, Portal.BD, Portal.LR, Portal.LI, Portal.SLC, Portal.SLN}
)
LEGACY_PORTALS: dict[str, Portal] = {
    "marktplaats": Portal.MARKTPLAATS,
    "tweedehands": Portal.TWEEDEHANDS,
    "website": Portal.WEBSITE,
}


class Provider(StrEnum):
    CLASSIFIEDS_V3 = "CLASSIFIEDS_V3"
    LEGACY = "LEGACY"


class PublicationState(StrEnum):
    NOT_PUBLISHED = "NOT_PUBLISHED"
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"


class ClassifiedStatusCode(StrEnum):
    """The 12 documented classified statuses, plus UNKNOWN for anything newer."""

    RECEIVING = "RECEIVING"
    RECEIVED = "RECEIVED"
    RECEIVING_FAILED = "RECEIVING_FAILED"
    CREATING = "CREATING"
    CREATED = "CREATED"
    CREATING_FAILED = "CREATING_FAILED"
    UPDATING = "UPDATING"
    UPDATED = "UPDATED"
    UPDATING_FAILED = "UPDATING_FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"
    DELETING_FAILED = "DELETING_FAILED"
    UNKNOWN = "UNKNOWN"


class MediaStatusCode(StrEnum):
    """The union of both documented media status lists, plus UNKNOWN."""

    RECEIVED = "RECEIVED"
    DOWNLOADING = "DOWNLOADING"
    DOWNLOADING_FAILED = "DOWNLOADING_FAILED"
    DOWNLOADED = "DOWNLOADED"
    AV_SCANNING = "AV_SCANNING"
    AV_SCANNED = "AV_SCANNED"
    AV_CLEANED = "AV_CLEANED"
    AV_QUARANTINED = "AV_QUARANTINED"
    DELETING = "DELETING"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"


# The vendor marks these media statuses as needing the client to act; no classified
# status needs action (its *_FAILED values mean "contact support").
MEDIA_ACTION_REQUIRED: frozenset[MediaStatusCode] = frozenset(
    {MediaStatusCode.DOWNLOADING_FAILED, MediaStatusCode.AV_QUARANTINED}
)


@dataclass(frozen=True, slots=True)
class ClassifiedStatusItem:
    """One entry of a classified's status history (V3 `ClassifiedStatus`)."""

    status: ClassifiedStatusCode
    raw_status: str
    message: str
    status_date: datetime
    portals: tuple[Portal, ...] = ()
    # Codes the Portal enum lacks, kept so they can be logged and counted.
    unknown_portals: tuple[str, ...] = ()
    sub_status: str | None = None
    sub_status_details: str | None = None
    # The "internal" variant's fields, present only when the upstream sends them. Its
    # `creationDate` is not kept: nothing reads it, and cached pages hold many items.
    status_id: str | None = None
    classified_id: str | None = None
    customer_id: str | None = None
    revision: int | None = None

    @property
    def known(self) -> bool:
        return self.status is not ClassifiedStatusCode.UNKNOWN


@dataclass(frozen=True, slots=True)
class ClassifiedStatusEvent:
    """A classified's new status, as pushed by V3's webhook and accepted by the gateway.

    `received_at` is when the gateway accepted it (aware, UTC), not the upstream's statusDate.
    """

    classified_id: str
    status: ClassifiedStatusItem
    received_at: datetime


@dataclass(frozen=True, slots=True)
class MediaStatusItem:
    """One entry of a media's status history (V3 `MediaStatus`)."""

    status: MediaStatusCode
    raw_status: str
    message: str
    status_date: datetime
    portal: Portal | None = None
    # Set when the upstream sent a portal code the enum lacks.
    raw_portal: str | None = None
    sub_status: str | None = None
    sub_status_details: str | None = None
    status_id: str | None = None
    media_id: str | None = None
    classified_id: str | None = None
    customer_id: str | None = None  # (`creationDate` is not kept, as for classified statuses)

    @property
    def action_required(self) -> bool:
        return self.status in MEDIA_ACTION_REQUIRED


T = TypeVar("T")


@dataclass(frozen=True, slots=True, weakref_slot=True)
class StatusPage(Generic[T]):
    """One page of a V3 status history; `next_token` is None on the last page.

    Weakly referable, so what is built from cached pages can be forgotten with them.
    """

    items: tuple[T, ...]
    next_token: str | None = None


@dataclass(frozen=True, slots=True)
class LegacyPublishStatus:
    """A legacy portal's publish status; every field optional, as the upstream is loose."""

    pending: bool = False
    pending_date: datetime | None = None
    processing: bool = False
    processing_date: datetime | None = None
    error: bool = False
    active: bool = False
    online: bool = False
    start_date: datetime | None = None
    close_date: datetime | None = None
    remote_ad_id: int | None = None


@dataclass(frozen=True, slots=True)
class LegacyFeatureStatus:
    """A paid feature (e.g. `dagtopper`) of an ad on a legacy portal."""

    feature: str
    pending: bool = False
    pending_date: datetime | None = None
    processing: bool = False
    processing_date: datetime | None = None
    error: bool = False
    active: bool = False
    start_date: datetime | None = None

    @property
    def known(self) -> bool:
        return self.feature in LEGACY_FEATURES


LEGACY_FEATURES: frozenset[str] = frozenset(
    {"omhoogplaatsen", "dagtopper", "dagtopper3", "dagtopper7", "homepaginaAdvertentie", "url"}
)


@dataclass(frozen=True, slots=True)
class LegacyPortalStatus:
    """Publish and feature status of one ad on one legacy portal."""

    raw_portal: str
    portal: Portal | None  # None when the upstream names a portal the enum lacks
    publish: LegacyPublishStatus
    features: tuple[LegacyFeatureStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class LegacyAdStatus:
    """Everything the legacy API says about one ad."""

    user_id: int
    ad_id: int
    portals: tuple[LegacyPortalStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class LegacyBatch:
    """The answer to one many-ads lookup of one user: found ads and the adIds reported missing."""

    user_id: int
    found: dict[int, LegacyAdStatus] = field(default_factory=dict)
    missing: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is made for, as far as the upstreams care.

    `intermediary_id` picks the agency in V3 `oauth` mode (None: the configured default);
    `authorization` is the caller's own `Authorization` header, forwarded in `passthrough`
    mode; `traceparent` is the caller's W3C trace context, continued upstream.
    """

    intermediary_id: str | None = None
    authorization: str | None = field(default=None, repr=False)
    traceparent: str | None = None


class Headers(Protocol):
    """What `caller_of` reads: HTTP headers or gRPC metadata, by lower-case name."""

    def get(self, key: str, /) -> str | None: ...


def caller_of(headers: Headers) -> Caller:
    """The upstream-relevant identity of an incoming request, from its headers or metadata."""
    return Caller(
        intermediary_id=headers.get("x-intermediary-id") or None,
        authorization=headers.get("authorization") or None,
        traceparent=headers.get("traceparent") or None,
    )


@dataclass(frozen=True, slots=True)
class LegacyAdKey:
    """Names one ad of the legacy API."""

    user_id: int
    ad_id: int


@dataclass(frozen=True, slots=True)
class ListingRef:
    """How a caller names a listing: a V3 classified, a legacy ad, or both (the same property)."""

    classified_id: str | None = None
    legacy: LegacyAdKey | None = None


@dataclass(frozen=True, slots=True)
class PortalState:
    """Where a listing stands on one portal, reduced to the unified states."""

    portal: Portal
    provider: Provider
    state: PublicationState
    since: datetime | None = None
    message: str | None = None
    action_required: bool = False


@dataclass(frozen=True, slots=True)
class StatusSlice(Generic[T]):
    """One page of a status history as a caller sees it: items newest first, and a cursor.

    Paging is forward only: `has_previous_page` says whether the page was asked for after a
    cursor (a later page), as the Relay cursor connections spec allows for forward paging.
    """

    items: tuple[T, ...]
    has_next_page: bool = False
    end_cursor: str | None = None
    ids: tuple[str, ...] = ()  # the public id of each item, in the same order
    has_previous_page: bool = False
