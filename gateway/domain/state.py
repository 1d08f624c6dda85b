"""Unified publication state: how each upstream's statuses reduce to `PublicationState`.

Pure functions over domain models. V3 statuses are per classified and list several
portals, so a portal's state comes from the newest item that names it (upstream order
is not trusted: newest means greatest `statusDate`). Legacy statuses are per portal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from gateway.domain.models import (
    ClassifiedStatusCode,
    ClassifiedStatusItem,
    LegacyAdStatus,
    LegacyPublishStatus,
    Portal,
    PortalState,
    Provider,
    PublicationState,
)

log = logging.getLogger(__name__)

_CLASSIFIED_STATES: dict[ClassifiedStatusCode, PublicationState] = {
    ClassifiedStatusCode.RECEIVING: PublicationState.PENDING,
    ClassifiedStatusCode.RECEIVED: PublicationState.PENDING,
    ClassifiedStatusCode.CREATING: PublicationState.PROCESSING,
    ClassifiedStatusCode.UPDATING: PublicationState.PROCESSING,
    ClassifiedStatusCode.CREATED: PublicationState.ONLINE,
    ClassifiedStatusCode.UPDATED: PublicationState.ONLINE,
    ClassifiedStatusCode.RECEIVING_FAILED: PublicationState.FAILED,
    ClassifiedStatusCode.CREATING_FAILED: PublicationState.FAILED,
    ClassifiedStatusCode.UPDATING_FAILED: PublicationState.FAILED,
    ClassifiedStatusCode.DELETING_FAILED: PublicationState.FAILED,
    ClassifiedStatusCode.DELETING: PublicationState.DELETING,
    ClassifiedStatusCode.DELETED: PublicationState.DELETED,
}

# Overall state: FAILED wins outright, then the first of these present.
_PRECEDENCE: tuple[PublicationState, ...] = (
    PublicationState.ONLINE,
    PublicationState.PROCESSING,
    PublicationState.PENDING,
    PublicationState.DELETING,
    PublicationState.OFFLINE,
    PublicationState.DELETED,
    PublicationState.NOT_PUBLISHED,
)


def classified_item_state(item: ClassifiedStatusItem) -> PublicationState | None:
    """The unified state one V3 status item stands for; None for a status we do not know."""
    state = _CLASSIFIED_STATES.get(item.status)
    if state is PublicationState.PENDING and (item.sub_status or "").endswith("_DELETE"):
        # A received deletion is on its way out, not on its way online.
        return PublicationState.DELETING
    return state


def latest_item(items: Iterable[ClassifiedStatusItem]) -> ClassifiedStatusItem | None:
    """The item with the greatest statusDate (the first such one on a tie)."""
    best: ClassifiedStatusItem | None = None
    for item in items:
        if best is None or item.status_date > best.status_date:
            best = item
    return best


def v3_portal_states(items: Sequence[ClassifiedStatusItem]) -> list[PortalState]:
    """Per portal, the state of the newest known-status item that lists that portal."""
    newest: dict[Portal, ClassifiedStatusItem] = {}
    for item in items:
        if not item.known:
            continue
        for portal in item.portals:
            current = newest.get(portal)
            if current is None or item.status_date > current.status_date:
                newest[portal] = item
    states: list[PortalState] = []
    for portal in sorted(newest, key=_portal_order):
        item = newest[portal]
        state = classified_item_state(item)
        if state is None:  # pragma: no cover - unknown items were skipped above
            continue
        states.append(
            PortalState(
                portal=portal,
                provider=Provider.CLASSIFIEDS_V3,
                state=state,
                since=item.status_date,
                message=item.message,
                action_required=False,  # the vendor marks no classified status as needing action
            )
        )
    return states


def legacy_publish_state(publish: LegacyPublishStatus) -> PublicationState:
    """The rules for one legacy portal (docs/upstreams.md), first match wins."""
    if publish.error:
        return PublicationState.FAILED
    if publish.processing:
        return PublicationState.PROCESSING
    if publish.pending:
        return PublicationState.PENDING
    if publish.active:
        return PublicationState.ONLINE if publish.online else PublicationState.OFFLINE
    if publish.close_date is not None:
        return PublicationState.OFFLINE
    return PublicationState.NOT_PUBLISHED


_LEGACY_MESSAGES: dict[PublicationState, str] = {
    PublicationState.FAILED: "Publishing failed at the portal",
    PublicationState.PROCESSING: "Being sent to the portal",
    PublicationState.PENDING: "Queued for publishing",
    PublicationState.ONLINE: "Published and visible",
    PublicationState.OFFLINE: "Not visible on the portal",
    PublicationState.NOT_PUBLISHED: "Never published",
}


def legacy_portal_states(ad: LegacyAdStatus) -> list[PortalState]:
    """One `PortalState` per legacy portal the enum knows; unknown portals are logged."""
    states: list[PortalState] = []
    for entry in ad.portals:
        if entry.portal is None:
            log.info("legacy portal %r is not in the Portal enum; left out", entry.raw_portal)
            continue
        publish = entry.publish
        state = legacy_publish_state(publish)
        since = {
            PublicationState.PROCESSING: publish.processing_date,
            PublicationState.PENDING: publish.pending_date,
            PublicationState.ONLINE: publish.start_date,
            PublicationState.OFFLINE: publish.close_date or publish.start_date,
        }.get(state)
        states.append(
            PortalState(
                portal=entry.portal,
                provider=Provider.LEGACY,
                state=state,
                since=since,
                message=_LEGACY_MESSAGES.get(state),
                action_required=state is PublicationState.FAILED,
            )
        )
    return states


def overall_state(portals: Iterable[PortalState]) -> PublicationState:
    """FAILED if any portal failed, else the first present in precedence order."""
    present = {portal.state for portal in portals}
    if PublicationState.FAILED in present:
        return PublicationState.FAILED
    for state in _PRECEDENCE:
        if state in present:
            return state
    return PublicationState.NOT_PUBLISHED


_ORDER = {portal: index for index, portal in enumerate(Portal)}


def _portal_order(portal: Portal) -> int:
    return _ORDER[portal]
