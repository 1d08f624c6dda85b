"""The unified-state rules of docs/upstreams.md, over domain models only."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.models import (
    ClassifiedStatusCode,
    ClassifiedStatusItem,
    LegacyAdStatus,
    LegacyPortalStatus,
    LegacyPublishStatus,
    Portal,
    PortalState,
    Provider,
    PublicationState,
)
from gateway.domain.state import (
    classified_item_state,
    latest_item,
    legacy_portal_states,
    legacy_publish_state,
    overall_state,
    v3_portal_states,
)

S = PublicationState
C = ClassifiedStatusCode
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def item(
    status: ClassifiedStatusCode,
    *,
    minutes: int = 0,
    portals: tuple[Portal, ...] = (Portal.SL,),
    sub_status: str | None = None,
    raw_status: str | None = None,
    message: str | None = None,
) -> ClassifiedStatusItem:
    return ClassifiedStatusItem(
        status=status,
        raw_status=raw_status or status.value,
        message=message or f"{status.value} at +{minutes}min",
        status_date=T0 + timedelta(minutes=minutes),
        portals=portals,
        sub_status=sub_status,
    )


def by_portal(states: list[PortalState]) -> dict[Portal, PortalState]:
    result = {state.portal: state for state in states}
    assert len(result) == len(states), "a portal appears twice"
    return result


# --- V3: one item ------------------------------------------------------------------------

V3_RULES = [
    # RECEIVING/RECEIVED with a *_DELETE subStatus: on its way out.
    (C.RECEIVING, "RECEIVING_DELETE", S.DELETING),
    (C.RECEIVED, "RECEIVED_DELETE", S.DELETING),
    # other RECEIVING/RECEIVED: pending, whatever (or whether) the subStatus.
    (C.RECEIVING, "RECEIVING_POST", S.PENDING),
    (C.RECEIVING, "RECEIVING_PUT", S.PENDING),
    (C.RECEIVING, "RECEIVING_PATCH", S.PENDING),
    (C.RECEIVING, None, S.PENDING),
    (C.RECEIVED, "RECEIVED_POST", S.PENDING),
    (C.RECEIVED, "RECEIVED_PUT", S.PENDING),
    (C.RECEIVED, "RECEIVED_PATCH", S.PENDING),
    (C.RECEIVED, "RECEIVED_SOMETHING_NEW", S.PENDING),  # unknown subStatus passes through
    (C.RECEIVED, None, S.PENDING),
    (C.CREATING, None, S.PROCESSING),
    (C.UPDATING, None, S.PROCESSING),
    (C.CREATED, None, S.ONLINE),
    (C.UPDATED, None, S.ONLINE),
    # every *_FAILED is FAILED, even a failed deletion receipt.
    (C.RECEIVING_FAILED, "RECEIVING_FAILED_POST", S.FAILED),
    (C.RECEIVING_FAILED, "RECEIVING_FAILED_DELETE", S.FAILED),
    (C.CREATING_FAILED, None, S.FAILED),
    (C.UPDATING_FAILED, None, S.FAILED),
    (C.DELETING_FAILED, None, S.FAILED),
    (C.DELETING, None, S.DELETING),
    (C.DELETED, None, S.DELETED),
]


@pytest.mark.parametrize(("status", "sub_status", "expected"), V3_RULES)
def test_v3_item_rule(
    status: ClassifiedStatusCode, sub_status: str | None, expected: PublicationState
) -> None:
    single = item(status, sub_status=sub_status, portals=(Portal.BU, Portal.SLC))
    assert classified_item_state(single) is expected
    states = v3_portal_states([single])
    assert [s.portal for s in states] == [Portal.BU, Portal.SLC]
    for state in states:
        assert state.state is expected
        assert state.provider is Provider.CLASSIFIEDS_V3
        assert state.since == single.status_date
        assert state.message == single.message
        assert state.action_required is False  # no classified status asks the client to act


def test_v3_rules_cover_every_known_status() -> None:
    covered = {status for status, _, _ in V3_RULES}
    assert covered == set(ClassifiedStatusCode) - {ClassifiedStatusCode.UNKNOWN}


def test_unknown_item_has_no_state() -> None:
    assert classified_item_state(item(C.UNKNOWN, raw_status="ARCHIVED")) is None


# --- V3: newest item per portal ------------------------------------------------------------

# Each portal's newest item is a different one; the newest item overall lists only SL.
HISTORY = [
    item(
        C.RECEIVED,
        minutes=0,
        portals=(Portal.SL, Portal.BU, Portal.COM, Portal.LI),
        sub_status="RECEIVED_POST",
    ),
    item(C.CREATED, minutes=10, portals=(Portal.SL, Portal.BU, Portal.COM)),
    item(C.UPDATING_FAILED, minutes=20, portals=(Portal.BU,)),
    item(C.RECEIVED, minutes=30, portals=(Portal.COM,), sub_status="RECEIVED_DELETE"),
    item(C.UPDATING, minutes=40, portals=(Portal.SL,)),
]
EXPECTED_PER_PORTAL = {
    Portal.SL: (S.PROCESSING, 40),
    Portal.BU: (S.FAILED, 20),
    Portal.COM: (S.DELETING, 30),
    Portal.LI: (S.PENDING, 0),
}


@pytest.mark.parametrize("seed", range(8))
def test_v3_newest_item_per_portal_whatever_the_upstream_order(seed: int) -> None:
    items = list(HISTORY)
    random.Random(seed).shuffle(items)
    states = by_portal(v3_portal_states(items))
    assert {p: (s.state, s.since) for p, s in states.items()} == {
        portal: (state, T0 + timedelta(minutes=minutes))
        for portal, (state, minutes) in EXPECTED_PER_PORTAL.items()
    }


def test_v3_portals_come_in_enum_order() -> None:
    items = [
        item(C.CREATED, minutes=1, portals=(Portal.SLN, Portal.SL)),
        item(C.CREATED, minutes=2, portals=(Portal.BD, Portal.BU)),
    ]
    assert [s.portal for s in v3_portal_states(items)] == [
        Portal.SL,
        Portal.BU,
        Portal.BD,
        Portal.SLN,
    ]


def test_v3_newest_item_alone_is_not_enough() -> None:
    # The latest item names only SL; BU keeps the state of an older item.
    items = [
        item(C.DELETED, minutes=5, portals=(Portal.SL,)),
        item(C.CREATED, minutes=1, portals=(Portal.SL, Portal.BU)),
    ]
    states = by_portal(v3_portal_states(items))
    assert states[Portal.SL].state is S.DELETED
    assert states[Portal.BU].state is S.ONLINE
    assert latest_item(reversed(items)) is items[0]


def test_unknown_status_items_are_skipped() -> None:
    newest_unknown = item(C.UNKNOWN, minutes=50, portals=(Portal.SL, Portal.BD), raw_status="X")
    items = [item(C.CREATED, minutes=10, portals=(Portal.SL,)), newest_unknown]
    states = by_portal(v3_portal_states(items))
    # SL falls back to the newest known item; BD, named only by the unknown one, is absent.
    assert set(states) == {Portal.SL}
    assert states[Portal.SL].state is S.ONLINE
    assert states[Portal.SL].since == T0 + timedelta(minutes=10)
    # ... while `latestStatus` still shows the unknown item.
    assert latest_item(items) is newest_unknown


def test_only_unknown_items_give_no_portal() -> None:
    assert v3_portal_states([item(C.UNKNOWN, raw_status="NEW_THING")]) == []
    assert overall_state(v3_portal_states([item(C.UNKNOWN, raw_status="X")])) is S.NOT_PUBLISHED


def test_latest_item_takes_greatest_date_not_first() -> None:
    items = [item(C.CREATED, minutes=m) for m in (3, 9, 1, 7)]
    latest = latest_item(items)
    assert latest is not None and latest.status_date == T0 + timedelta(minutes=9)
    assert latest_item([]) is None


def test_v3_empty_history() -> None:
    assert v3_portal_states([]) == []


# --- legacy ----------------------------------------------------------------------------------

DATE = datetime(2024, 4, 2, 9, 30, tzinfo=UTC)

LEGACY_RULES = [
    # error beats everything
    ({"error": True}, S.FAILED),
    (
        {"error": True, "processing": True, "pending": True, "active": True, "online": True},
        S.FAILED,
    ),
    ({"error": True, "close_date": DATE}, S.FAILED),
    # processing beats pending and active
    ({"processing": True}, S.PROCESSING),
    ({"processing": True, "pending": True, "active": True, "online": True}, S.PROCESSING),
    # pending beats active
    ({"pending": True}, S.PENDING),
    ({"pending": True, "active": True, "online": True, "close_date": DATE}, S.PENDING),
    # active: online or not
    ({"active": True, "online": True}, S.ONLINE),
    ({"active": True, "online": True, "close_date": DATE}, S.ONLINE),
    ({"active": True, "online": False}, S.OFFLINE),
    # not active: a real closeDate means it was taken down
    ({"close_date": DATE}, S.OFFLINE),
    ({"online": True, "close_date": DATE}, S.OFFLINE),
    # nothing else: never published ("0000-00-00 00:00:00" parses to None)
    ({}, S.NOT_PUBLISHED),
    ({"online": True}, S.NOT_PUBLISHED),
    ({"start_date": DATE}, S.NOT_PUBLISHED),
    ({"pending_date": DATE, "processing_date": DATE}, S.NOT_PUBLISHED),
]


@pytest.mark.parametrize(("flags", "expected"), LEGACY_RULES)
def test_legacy_publish_rule(flags: dict[str, object], expected: PublicationState) -> None:
    publish = LegacyPublishStatus(**flags)  # type: ignore[arg-type]
    assert legacy_publish_state(publish) is expected
    ad = LegacyAdStatus(
        user_id=1,
        ad_id=2,
        portals=(LegacyPortalStatus("tweedehands", Portal.TWEEDEHANDS, publish),),
    )
    [state] = legacy_portal_states(ad)
    assert state.portal is Portal.TWEEDEHANDS
    assert state.provider is Provider.LEGACY
    assert state.state is expected
    # error -> actionRequired, and only error.
    assert state.action_required is (expected is S.FAILED)


def test_legacy_since_follows_the_state() -> None:
    pending, processing, start, close = (DATE + timedelta(days=d) for d in range(4))
    cases = [
        (LegacyPublishStatus(pending=True, pending_date=pending), pending),
        (LegacyPublishStatus(processing=True, processing_date=processing), processing),
        (LegacyPublishStatus(active=True, online=True, start_date=start), start),
        (LegacyPublishStatus(close_date=close, start_date=start), close),
    ]
    for publish, since in cases:
        ad = LegacyAdStatus(1, 2, (LegacyPortalStatus("website", Portal.WEBSITE, publish),))
        assert legacy_portal_states(ad)[0].since == since, publish


def test_unknown_legacy_portal_is_left_out() -> None:
    online = LegacyPublishStatus(active=True, online=True)
    failed = LegacyPublishStatus(error=True)
    ad = LegacyAdStatus(
        user_id=1,
        ad_id=2,
        portals=(
            LegacyPortalStatus("marktplaats", Portal.MARKTPLAATS, online),
            LegacyPortalStatus("kapaza", None, failed),  # a portal the enum lacks
        ),
    )
    states = legacy_portal_states(ad)
    assert [(s.portal, s.state) for s in states] == [(Portal.MARKTPLAATS, S.ONLINE)]
    # The unknown portal's failure does not reach the overall state either.
    assert overall_state(states) is S.ONLINE


def test_legacy_ad_without_portals() -> None:
    assert legacy_portal_states(LegacyAdStatus(user_id=1, ad_id=2)) == []


# --- overall ---------------------------------------------------------------------------------

PRECEDENCE = [S.ONLINE, S.PROCESSING, S.PENDING, S.DELETING, S.OFFLINE, S.DELETED, S.NOT_PUBLISHED]


def portal_states(*states: PublicationState) -> list[PortalState]:
    portals = list(Portal)
    return [
        PortalState(portal=portals[i % len(portals)], provider=Provider.LEGACY, state=state)
        for i, state in enumerate(states)
    ]


OVERALL = [
    ((), S.NOT_PUBLISHED),
    ((S.NOT_PUBLISHED,), S.NOT_PUBLISHED),
    ((S.FAILED,), S.FAILED),
    ((S.ONLINE, S.FAILED, S.ONLINE), S.FAILED),
    ((S.NOT_PUBLISHED, S.DELETED, S.FAILED), S.FAILED),
    ((S.DELETED, S.OFFLINE, S.DELETING, S.PENDING, S.PROCESSING, S.ONLINE), S.ONLINE),
    ((S.DELETED, S.OFFLINE, S.DELETING, S.PENDING, S.PROCESSING), S.PROCESSING),
    ((S.NOT_PUBLISHED, S.DELETED, S.OFFLINE, S.DELETING, S.PENDING), S.PENDING),
    ((S.NOT_PUBLISHED, S.DELETED, S.OFFLINE, S.DELETING), S.DELETING),
    ((S.NOT_PUBLISHED, S.DELETED, S.OFFLINE), S.OFFLINE),
    ((S.NOT_PUBLISHED, S.DELETED), S.DELETED),
    ((S.DELETED, S.DELETED), S.DELETED),
]


@pytest.mark.parametrize(("states", "expected"), OVERALL)
def test_overall_state(states: tuple[PublicationState, ...], expected: PublicationState) -> None:
    assert overall_state(portal_states(*states)) is expected
    assert overall_state(portal_states(*reversed(states))) is expected


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        (PRECEDENCE[i], PRECEDENCE[j])
        for i in range(len(PRECEDENCE))
        for j in range(i + 1, len(PRECEDENCE))
    ],
)
def test_overall_precedence_pairwise(higher: PublicationState, lower: PublicationState) -> None:
    assert overall_state(portal_states(lower, higher)) is higher
    assert overall_state(portal_states(higher, lower, S.FAILED)) is S.FAILED


def test_overall_over_both_providers() -> None:
    v3 = v3_portal_states(
        [
            item(C.CREATED, minutes=1, portals=(Portal.SL,)),
            item(C.DELETED, minutes=2, portals=(Portal.SL,)),
        ]
    )
    legacy = legacy_portal_states(
        LegacyAdStatus(
            1,
            2,
            (LegacyPortalStatus("website", Portal.WEBSITE, LegacyPublishStatus(close_date=DATE)),),
        )
    )
    assert [s.state for s in v3 + legacy] == [S.DELETED, S.OFFLINE]
    assert overall_state(v3 + legacy) is S.OFFLINE
