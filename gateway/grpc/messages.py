"""Conversions between protobuf messages and the domain models, both ways.

Requests become domain refs and filters (a value the domain cannot hold is `InvalidInput`);
domain results become messages. Enum values follow one rule: proto `PREFIX_NAME` is domain
`NAME`, so a domain enum and its proto enum cannot drift without a test noticing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.domain import ids, models
from gateway.domain.changes import ListingChange
from gateway.domain.errors import GatewayError, InvalidInput
from gateway.grpc.generated import listing_status_pb2 as pb

E = TypeVar("E", bound=StrEnum)

_PORTAL = "PORTAL_"
_PROVIDER = "PROVIDER_"
_STATE = "PUBLICATION_STATE_"
_STATUS = "CLASSIFIED_STATUS_CODE_"


# --- requests -----------------------------------------------------------------------


def ref_of(message: pb.ListingRef) -> models.ListingRef:
    """The domain ref of a `ListingRef`; checked later, with the same rules as GraphQL's."""
    legacy = (
        models.LegacyAdKey(user_id=message.legacy.user_id, ad_id=message.legacy.ad_id)
        if message.HasField("legacy")
        else None
    )
    classified_id = message.classified_id if message.HasField("classified_id") else None
    return models.ListingRef(classified_id=classified_id, legacy=legacy)


def _domain_enum(kind: type[E], prefix: str, name: str, what: str) -> E:
    value = name.removeprefix(prefix)
    try:
        member = kind(value)
    except ValueError:
        raise InvalidInput(f"{what} {name} is not accepted here") from None
    if member.value == "UNKNOWN":
        raise InvalidInput(f"{what} {name} is not accepted here")
    return member


def _enum_name(name_of: Callable[[Any], str], value: int, what: str) -> str:
    """The proto name of `value` (`name_of` is the enum's `Name`). proto3 enums are open:
    a number the .proto does not define arrives as a plain int, and is the caller's mistake."""
    try:
        return name_of(value)
    except ValueError:
        raise InvalidInput(f"{what} {value} is not a value the API defines") from None


def status_codes_of(
    values: Iterable[pb.ClassifiedStatusCode.ValueType],
) -> list[models.ClassifiedStatusCode]:
    """Status filters; UNSPECIFIED and UNKNOWN name no upstream status."""
    return [
        _domain_enum(
            models.ClassifiedStatusCode,
            _STATUS,
            _enum_name(pb.ClassifiedStatusCode.Name, value, "status"),
            "status",
        )
        for value in values
    ]


def portals_of(values: Iterable[pb.Portal.ValueType]) -> list[models.Portal]:
    return [
        _domain_enum(models.Portal, _PORTAL, _enum_name(pb.Portal.Name, value, "portal"), "portal")
        for value in values
    ]


# --- results ------------------------------------------------------------------------


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def portal(value: models.Portal) -> pb.Portal.ValueType:
    return pb.Portal.Value(_PORTAL + value.value)


def provider(value: models.Provider) -> pb.Provider.ValueType:
    return pb.Provider.Value(_PROVIDER + value.value)


def publication_state(value: models.PublicationState) -> pb.PublicationState.ValueType:
    return pb.PublicationState.Value(_STATE + value.value)


def ref_message(ref: models.ListingRef) -> pb.ListingRef:
    return pb.ListingRef(
        classified_id=ref.classified_id,
        legacy=(
            pb.LegacyAdRef(user_id=ref.legacy.user_id, ad_id=ref.legacy.ad_id)
            if ref.legacy is not None
            else None
        ),
    )


def portal_status(state: models.PortalState) -> pb.PortalStatus:
    return pb.PortalStatus(
        portal=portal(state.portal),
        provider=provider(state.provider),
        state=publication_state(state.state),
        since=_timestamp(state.since),
        message=state.message,
        action_required=state.action_required,
    )


def classified_status(item: models.ClassifiedStatusItem, classified_id: str) -> pb.ClassifiedStatus:
    return pb.ClassifiedStatus(
        id=ids.status_item_id(classified_id, item),
        status=pb.ClassifiedStatusCode.Value(_STATUS + item.status.value),
        raw_status=item.raw_status,
        sub_status=item.sub_status,
        sub_status_details=item.sub_status_details,
        message=item.message,
        portals=[portal(p) for p in item.portals],
        date=_timestamp(item.status_date),
        action_required=False,
    )


def legacy_ad(ad: models.LegacyAdStatus) -> pb.LegacyAd:
    return pb.LegacyAd(
        user_id=ad.user_id,
        ad_id=ad.ad_id,
        portals=[
            pb.LegacyPortalStatus(
                portal=portal(entry.portal),
                publish=_publish(entry.publish),
                features=[_feature(feature) for feature in entry.features],
            )
            for entry in ad.portals
            # A portal the enum lacks is left out, as in GraphQL.
            if entry.portal is not None
        ],
    )


def _publish(publish: models.LegacyPublishStatus) -> pb.LegacyPublishStatus:
    return pb.LegacyPublishStatus(
        pending=publish.pending,
        pending_date=_timestamp(publish.pending_date),
        processing=publish.processing,
        processing_date=_timestamp(publish.processing_date),
        error=publish.error,
        active=publish.active,
        online=publish.online,
        start_date=_timestamp(publish.start_date),
        close_date=_timestamp(publish.close_date),
        remote_ad_id=publish.remote_ad_id,
    )


def _feature(feature: models.LegacyFeatureStatus) -> pb.LegacyFeatureStatus:
    return pb.LegacyFeatureStatus(
        feature=feature.feature,
        pending=feature.pending,
        pending_date=_timestamp(feature.pending_date),
        processing=feature.processing,
        processing_date=_timestamp(feature.processing_date),
        error=feature.error,
        active=feature.active,
        start_date=_timestamp(feature.start_date),
    )


def source_error(field: str, error: GatewayError) -> pb.SourceError:
    """A per-field failure, with the code GraphQL puts in `extensions.code`."""
    upstream = {"classifieds-v3": models.Provider.CLASSIFIEDS_V3, "legacy": models.Provider.LEGACY}
    return pb.SourceError(
        field=field,
        code=error.code,
        provider=(
            provider(upstream[error.upstream])
            if error.upstream is not None
            else pb.PROVIDER_UNSPECIFIED
        ),
        message=error.message,
    )


def stale_v3(age_s: float) -> pb.StaleSource:
    """V3 answered from a past-TTL cached page `age_s` old (whole seconds, as GraphQL)."""
    return pb.StaleSource(
        provider=pb.PROVIDER_CLASSIFIEDS_V3, age=Duration(seconds=math.floor(age_s))
    )


def status_event(event: models.ClassifiedStatusEvent) -> pb.ClassifiedStatusEvent:
    return pb.ClassifiedStatusEvent(
        classified_id=event.classified_id,
        status=classified_status(event.status, event.classified_id),
        received_at=_timestamp(event.received_at),
    )


def change_event(change: ListingChange, cursor: str, listing: pb.Listing) -> pb.ListingChangeEvent:
    return pb.ListingChangeEvent(
        cursor=cursor,
        provider=provider(change.provider),
        changed_portals=[portal(p) for p in change.portals],
        received_at=_timestamp(change.received_at),
        listing=listing,
    )
