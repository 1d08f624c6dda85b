"""Strawberry types of the public GraphQL contract: a thin layer over the domain models.

Every field below the root is a plain synchronous projection of what the service
gathered in one async step (see `resolvers.py`). Fields with arguments look up the
result gathered for their argument set and raise the stored `GatewayError` when that
read failed, so the error lands on that field alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Protocol, TypeVar

import strawberry
from strawberry import UNSET, Private

from gateway.domain import cursors, ids, models
from gateway.domain.errors import GatewayError
from gateway.live.webhooks import WebhookRegistration
from gateway.service.checks import DEFAULT_PAGE_SIZE
from gateway.service.listings import ClassifiedData, ListingData, MediaData
from gateway.service.plan import PageArgs

_FIRST = "Page size, 1 to 100 (default 20)."
_AFTER = "Only a pageInfo.endCursor of the previous page."


Portal = strawberry.enum(
    models.Portal,
    description="A portal a listing is published to: the eight Classifieds V3 portal codes "
    "(LR has no documented meaning) and the three legacy portals.",
)
Provider = strawberry.enum(models.Provider, description="Which upstream API a status comes from.")
PublicationState = strawberry.enum(
    models.PublicationState,
    description="Where a listing stands on a portal, unified across both upstreams.",
)
ClassifiedStatusCode = strawberry.enum(
    models.ClassifiedStatusCode,
    description="A Classifieds V3 classified status; UNKNOWN for a value this gateway does "
    "not know yet (its raw text is in `rawStatus`).",
)
MediaStatusCode = strawberry.enum(
    models.MediaStatusCode,
    description="A Classifieds V3 media status (the union of both documented lists); "
    "UNKNOWN for anything newer.",
)


@strawberry.interface(description="An object with a global id that `node(id:)` finds again.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global id.")


@strawberry.type(description="Identifies an ad of the legacy API.")
class LegacyAdKey:
    user_id: int = strawberry.field(description="The legacy user (account) id.")
    ad_id: int = strawberry.field(description="The legacy ad id.")


@strawberry.type(description="A listing's state on one portal, in the unified vocabulary.")
class PortalStatus:
    portal: Portal = strawberry.field(description="The portal.")  # type: ignore[valid-type]
    provider: Provider = strawberry.field(description="The upstream this status comes from.")  # type: ignore[valid-type]
    state: PublicationState = strawberry.field(description="The unified state on that portal.")  # type: ignore[valid-type]
    since: datetime | None = strawberry.field(
        description="When the portal reached this state, if known."
    )
    message: str | None = strawberry.field(
        description="Human-readable explanation; never parse it."
    )
    action_required: bool = strawberry.field(
        description="True when the client must act (e.g. fix and resubmit)."
    )

    @classmethod
    def from_domain(cls, state: models.PortalState) -> PortalStatus:
        return cls(
            portal=state.portal,
            provider=state.provider,
            state=state.state,
            since=state.since,
            message=state.message,
            action_required=state.action_required,
        )


@strawberry.type(description="One entry of a classified's Classifieds V3 status history.")
class ClassifiedStatus:
    id: strawberry.ID = strawberry.field(
        description="The upstream statusId when sent, else a stable id derived from the "
        "classified id, date and status."
    )
    status: ClassifiedStatusCode = strawberry.field(description="The status.")  # type: ignore[valid-type]
    raw_status: str = strawberry.field(description="The status exactly as the upstream sent it.")
    sub_status: str | None = strawberry.field(
        description="The write operation behind a RECEIVING*/RECEIVED status, e.g. RECEIVED_PUT; "
        "unknown values pass through."
    )
    sub_status_details: str | None = strawberry.field(
        description="Upstream details on the subStatus."
    )
    message: str | None = strawberry.field(
        description="Human-readable text from the upstream; never parse it."
    )
    portals: list[Portal] = strawberry.field(description="Portals this status applies to.")  # type: ignore[valid-type]
    date: datetime | None = strawberry.field(description="The upstream statusDate.")
    action_required: bool = strawberry.field(
        description="Always false: the vendor marks no classified status as needing client action "
        "(*_FAILED means contact support)."
    )

    @classmethod
    def from_domain(cls, item: models.ClassifiedStatusItem, status_id: str) -> ClassifiedStatus:
        return cls(
            id=strawberry.ID(status_id),
            status=item.status,
            raw_status=item.raw_status,
            sub_status=item.sub_status,
            sub_status_details=item.sub_status_details,
            message=item.message,
            portals=list(item.portals),
            date=item.status_date,
            action_required=False,
        )


@strawberry.type(description="One entry of a media's Classifieds V3 status history.")
class MediaStatus:
    id: strawberry.ID = strawberry.field(
        description="The upstream statusId when sent, else a stable derived id."
    )
    portal: Portal | None = strawberry.field(  # type: ignore[valid-type]
        description="The portal; null when the upstream sent none or an unknown code."
    )
    status: MediaStatusCode = strawberry.field(description="The media status.")  # type: ignore[valid-type]
    raw_status: str = strawberry.field(description="The status exactly as the upstream sent it.")
    sub_status: str | None = strawberry.field(
        description="E.g. DOWNLOADED_001; unknown values pass through."
    )
    message: str | None = strawberry.field(description="Human-readable text from the upstream.")
    action_required: bool = strawberry.field(
        description="True for DOWNLOADING_FAILED (fix the URL and resubmit) and AV_QUARANTINED (infected file)."
    )
    date: datetime | None = strawberry.field(description="The upstream statusDate.")

    @classmethod
    def from_domain(cls, item: models.MediaStatusItem, status_id: str) -> MediaStatus:
        return cls(
            id=strawberry.ID(status_id),
            portal=item.portal,
            status=item.status,
            raw_status=item.raw_status,
            sub_status=item.sub_status,
            message=item.message,
            action_required=item.action_required,
            date=item.status_date,
        )


@strawberry.type(
    description="Where a page of a connection starts and ends (the Relay cursor connections "
    "spec's PageInfo). Paging is forward only: `first` and `after`."
)
class PageInfo:
    has_next_page: bool = strawberry.field(description="True when a further page exists.")
    end_cursor: str | None = strawberry.field(
        description="The last edge's cursor (opaque); pass it as `after` for the next page. "
        "Null on an empty page with no next page."
    )
    has_previous_page: bool = strawberry.field(
        description="True when this page was asked for `after` a cursor, so earlier items exist."
    )
    start_cursor: str | None = strawberry.field(
        description="The first edge's cursor; null on an empty page."
    )


class _Identified(Protocol):
    id: strawberry.ID


N = TypeVar("N", bound=_Identified)


# Generic, so strawberry names each use after its node: ClassifiedStatusEdge,
# MediaStatusConnection and so on.
@strawberry.type(description="A status and its cursor.")
class Edge(Generic[N]):
    cursor: str = strawberry.field(
        description="Opaque; as `after`, the page that follows this edge's status."
    )
    node: N


@strawberry.type(description="A page of a status history, newest first.")
class Connection(Generic[N]):
    nodes: list[N]
    edges: list[Edge[N]]
    page_info: PageInfo

    @classmethod
    def of(cls, nodes: list[N], page: models.StatusSlice[Any]) -> Connection[N]:
        edges = [
            Edge(cursor=cursors.edge_cursor(page, index), node=node)
            for index, node in enumerate(nodes)
        ]
        return cls(
            nodes=nodes,
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                end_cursor=cursors.end_cursor(page),
                has_previous_page=page.has_previous_page,
                start_cursor=cursors.start_cursor(page),
            ),
        )


@strawberry.type(description="A media (photo, plan…) of a classified, with its processing status.")
class Media:
    id: strawberry.ID
    _data: Private[MediaData]

    @strawberry.field(
        description="The newest status (greatest date). Null with an error when V3 failed."
    )
    def latest_status(self) -> MediaStatus | None:
        item = _value(self._data.latest)
        if item is None:
            return None
        return MediaStatus.from_domain(item, ids.status_item_id(self._data.media_id, item))

    @strawberry.field(
        description="The media's status history, newest first: each page sorted by date, pages "
        "in V3's own paging order. Null with an error when V3 failed."
    )
    def statuses(
        self,
        first: Annotated[int | None, strawberry.argument(description=_FIRST)] = DEFAULT_PAGE_SIZE,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = UNSET,
    ) -> Connection[MediaStatus] | None:
        page = self._data.page(PageArgs.of(first, after or None))
        nodes = [
            MediaStatus.from_domain(item, status_id)
            for item, status_id in zip(page.items, page.ids, strict=True)
        ]
        return Connection.of(nodes, page)


@strawberry.type(description="The Classifieds V3 view of a listing.")
class Classified:
    id: strawberry.ID = strawberry.field(description="The V3 classifiedId.")
    _data: Private[ClassifiedData]

    @strawberry.field(
        description="The status with the greatest date. Null with an error when V3 failed."
    )
    def latest_status(self) -> ClassifiedStatus | None:
        item = _value(self._data.latest)
        if item is None:
            return None
        return ClassifiedStatus.from_domain(item, ids.status_item_id(str(self.id), item))

    @strawberry.field(
        description="The status history, newest first: each page sorted by date, pages in V3's "
        "own paging order. Null with an error when V3 failed."
    )
    def statuses(
        self,
        first: Annotated[int | None, strawberry.argument(description=_FIRST)] = DEFAULT_PAGE_SIZE,
        after: Annotated[str | None, strawberry.argument(description=_AFTER)] = UNSET,
        status: Annotated[
            list[ClassifiedStatusCode] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Keep only these statuses."),
        ] = UNSET,
        portal: Annotated[
            list[Portal] | None,  # type: ignore[valid-type]
            strawberry.argument(description="Keep only statuses listing one of these portals."),
        ] = UNSET,
    ) -> Connection[ClassifiedStatus] | None:
        page = self._data.page(PageArgs.of(first, after or None, status or (), portal or ()))
        nodes = [
            ClassifiedStatus.from_domain(item, status_id)
            for item, status_id in zip(page.items, page.ids, strict=True)
        ]
        return Connection.of(nodes, page)

    @strawberry.field(description="One media of this classified.")
    def media(self, media_id: strawberry.ID) -> Media:
        return Media(id=media_id, _data=self._data.media_data(str(media_id)))


@strawberry.type(description="Publish status of an ad on a legacy portal: every upstream field.")
class LegacyPublishStatus:
    pending: bool
    pending_date: datetime | None
    processing: bool
    processing_date: datetime | None
    error: bool
    active: bool
    online: bool
    start_date: datetime | None
    close_date: datetime | None
    # An ID, not an Int: portal ids outgrow GraphQL's 32-bit Int.
    remote_ad_id: strawberry.ID | None = strawberry.field(
        description="The portal's own id for the ad; null when none (upstream 0)."
    )


@strawberry.type(
    description="A paid feature of an ad on a legacy portal (e.g. dagtopper): every upstream field."
)
class LegacyFeatureStatus:
    feature: str
    pending: bool
    pending_date: datetime | None
    processing: bool
    processing_date: datetime | None
    error: bool
    active: bool
    start_date: datetime | None


@strawberry.type(description="An ad's publish and feature status on one legacy portal.")
class LegacyPortalStatus:
    portal: Portal  # type: ignore[valid-type]
    publish: LegacyPublishStatus
    features: list[LegacyFeatureStatus]


@strawberry.type(description="The legacy API's view of a listing.")
class LegacyAd:
    user_id: int
    ad_id: int
    portals: list[LegacyPortalStatus]

    @classmethod
    def from_domain(cls, ad: models.LegacyAdStatus) -> LegacyAd:
        return cls(
            user_id=ad.user_id,
            ad_id=ad.ad_id,
            portals=[
                LegacyPortalStatus(
                    portal=entry.portal,
                    publish=LegacyPublishStatus(
                        **{
                            **_fields(entry.publish),
                            "remote_ad_id": _id(entry.publish.remote_ad_id),
                        }
                    ),
                    features=[LegacyFeatureStatus(**_fields(f)) for f in entry.features],
                )
                for entry in ad.portals
                if entry.portal is not None
            ],
        )


def _id(value: int | None) -> strawberry.ID | None:
    return None if value is None else strawberry.ID(str(value))


def _fields(obj: object) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]


@strawberry.type(description="A property listing, as both upstreams see it.")
class Listing(Node):
    id: strawberry.ID = strawberry.field(
        description="Opaque; `node(id:)` returns the same listing."
    )
    classified_id: strawberry.ID | None = strawberry.field(
        description="The Classifieds V3 id, if any."
    )
    legacy_ad: LegacyAdKey | None = strawberry.field(description="The legacy ad, if any.")
    classified: Classified | None = strawberry.field(
        description="The V3 view; null when the listing has no classifiedId."
    )
    _data: Private[ListingData]

    @strawberry.field(
        description="Overall state: FAILED if any portal failed, else the most advanced state "
        "present. Null with an error when a source failed."
    )
    def state(self) -> PublicationState | None:  # type: ignore[valid-type]
        return _value(self._data.state)

    @strawberry.field(
        description="Every portal of both providers. Null with an error when a source failed."
    )
    def portals(self) -> list[PortalStatus] | None:
        portals = _value(self._data.portals)
        return None if portals is None else [PortalStatus.from_domain(p) for p in portals]

    @strawberry.field(description="The legacy view; null when the listing has no legacy ref.")
    def legacy(self) -> LegacyAd | None:
        ad = _value(self._data.legacy)
        return None if ad is None else LegacyAd.from_domain(ad)

    @classmethod
    def from_domain(cls, data: ListingData) -> Listing:
        ref = data.ref
        return cls(
            id=strawberry.ID(ids.listing_id(ref)),
            classified_id=strawberry.ID(ref.classified_id) if ref.classified_id else None,
            legacy_ad=(
                LegacyAdKey(user_id=ref.legacy.user_id, ad_id=ref.legacy.ad_id)
                if ref.legacy
                else None
            ),
            classified=(
                Classified(id=strawberry.ID(ref.classified_id), _data=data.classified)
                if ref.classified_id and data.classified is not None
                else None
            ),
            _data=data,
        )


T = TypeVar("T")


def _value(outcome: T | GatewayError | None) -> T | None:
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


@strawberry.type(
    description="A webhook subscription at Classifieds V3, as this gateway registered it."
)
class WebhookSubscription:
    url: str = strawberry.field(
        description="Where V3 posts new statuses (it appends /classifieds/{classifiedId}/statuses); "
        "this gateway's secret path segment is shown as ***."
    )
    statuses: list[ClassifiedStatusCode] | None = strawberry.field(  # type: ignore[valid-type]
        description="The statuses V3 notifies; null for every status."
    )
    receiver: bool = strawberry.field(description="True when url is this gateway's own receiver.")

    @classmethod
    def from_domain(cls, registration: WebhookRegistration) -> WebhookSubscription:
        return cls(
            url=registration.url,
            statuses=None if registration.statuses is None else list(registration.statuses),
            receiver=registration.receiver,
        )
