"""One listing end to end: every upstream field, as the contract shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway


@pytest.fixture(params=[True, False], ids=["compiled", "graphql-core"])
async def gateway(
    simulator: RunningSimulator, request: pytest.FixtureRequest
) -> AsyncIterator[RunningGateway]:
    """The gateway with compiled execution on, and again with it off."""
    async with run_gateway(simulator, compiled_execution=request.param) as running:
        yield running


CLASSIFIED = "5f0c1e9a-0000-4000-8000-00000000c0de"
USER, AD = 777_001, 4_242

HISTORY: list[dict[str, Any]] = [  # deliberately not newest first
    {"portals": ["SL", "LI"], "status": "CREATED", "message": "Classified created",
     "statusDate": "2024-03-01T10:00:05.000Z"},
    {"portals": ["SL", "LI", "ZZ"], "status": "RECEIVED", "subStatus": "RECEIVING_PATCH",
     "message": "Partial update passed on", "statusDate": "2024-03-02T09:00:00.000Z",
     "statusId": "e91d4fb9-80d5-45bf-9839-ff02b597b12d", "revision": 2},
    {"portals": ["SL", "LI"], "status": "RECEIVED", "subStatus": "RECEIVED_POST",
     "message": "Creation passed on", "statusDate": "2024-03-01T10:00:00.000Z"},
    {"portals": ["LI"], "status": "UPDATING_FAILED", "message": "Update failed",
     "statusDate": "2024-03-02T12:00:00.000Z"},
    {"portals": ["SL"], "status": "TELEPORTED", "message": "Something new",
     "statusDate": "2024-03-03T00:00:00.000Z"},
]  # fmt: skip
LEGACY_PORTALS: list[dict[str, Any]] = [
    {"portal": "marktplaats",
     "publish": {"pending": False, "pendingDate": "0000-00-00 00:00:00", "processing": False,
                 "processingDate": "0000-00-00 00:00:00", "error": False, "active": True,
                 "online": True, "startDate": "2024-06-24 11:50:12",
                 "closeDate": "2024-08-24 11:50:12", "remoteAdId": 1234567890},
     "features": [{"feature": "omhoogplaatsen", "pending": True,
                   "pendingDate": "2024-01-15 08:45:57", "processing": False,
                   "processingDate": "0000-00-00 00:00:00", "error": False, "active": False,
                   "startDate": "0000-00-00 00:00:00"}]},
    {"portal": "website",
     "publish": {"pending": False, "pendingDate": "0000-00-00 00:00:00", "processing": False,
                 "processingDate": "0000-00-00 00:00:00", "error": False, "active": False,
                 "online": False, "startDate": "0000-00-00 00:00:00", "remoteAdId": 0},
     "features": False},
    {"portal": "kapstok", "publish": {"active": True, "online": True}, "features": False},
]  # fmt: skip

QUERY = """query($ref: ListingRef!) { listing(ref: $ref) {
  classifiedId legacyAd { userId adId } state
  portals { portal provider state since message actionRequired }
  classified {
    latestStatus { id status rawStatus subStatus message portals date actionRequired }
    statuses { nodes { status subStatus portals date } pageInfo { hasNextPage endCursor } }
  }
  legacy { userId adId portals { portal
    publish { pending pendingDate processing processingDate error active online startDate closeDate remoteAdId }
    features { feature pending pendingDate processing processingDate error active startDate } } }
} }"""


async def test_every_field_of_both_upstreams(gateway: RunningGateway) -> None:
    gateway.sim.state.put_classified(CLASSIFIED, tenant="agency-1", items=HISTORY)
    gateway.sim.state.put_legacy_ad(USER, AD, LEGACY_PORTALS)
    ref = {"classifiedId": CLASSIFIED, "legacy": {"userId": USER, "adId": AD}}
    body = await gateway.query(QUERY, {"ref": ref})
    assert "errors" not in body, body
    listing = body["data"]["listing"]
    assert listing["classifiedId"] == CLASSIFIED
    assert listing["legacyAd"] == {"userId": USER, "adId": AD}
    # LI's newest item is a failure that names LI alone; SL's newest known item is the
    # received patch (the newer unknown status is skipped). FAILED wins overall.
    assert listing["state"] == "FAILED"
    assert listing["portals"] == [
        {"portal": "SL", "provider": "CLASSIFIEDS_V3", "state": "PENDING",
         "since": "2024-03-02T09:00:00+00:00", "message": "Partial update passed on",
         "actionRequired": False},
        {"portal": "LI", "provider": "CLASSIFIEDS_V3", "state": "FAILED",
         "since": "2024-03-02T12:00:00+00:00", "message": "Update failed",
         "actionRequired": False},
        {"portal": "MARKTPLAATS", "provider": "LEGACY", "state": "ONLINE",
         "since": "2024-06-24T11:50:12+02:00", "message": "Published and visible",
         "actionRequired": False},
        {"portal": "WEBSITE", "provider": "LEGACY", "state": "NOT_PUBLISHED", "since": None,
         "message": "Never published", "actionRequired": False},
    ]  # fmt: skip
    latest = listing["classified"]["latestStatus"]
    # The unknown status is the newest item: shown as UNKNOWN, skipped for portal states.
    assert latest["status"] == "UNKNOWN" and latest["rawStatus"] == "TELEPORTED"
    assert latest["date"] == "2024-03-03T00:00:00+00:00"
    nodes = listing["classified"]["statuses"]["nodes"]
    assert [node["date"][:19] for node in nodes] == [
        "2024-03-03T00:00:00", "2024-03-02T12:00:00", "2024-03-02T09:00:00",
        "2024-03-01T10:00:05", "2024-03-01T10:00:00",
    ]  # fmt: skip
    patched = nodes[2]
    assert patched["subStatus"] == "RECEIVED_PATCH"  # the vendor table's typo, normalised
    assert patched["portals"] == ["SL", "LI"]  # ZZ is not a portal the enum knows
    assert listing["classified"]["statuses"]["pageInfo"]["hasNextPage"] is False

    legacy = listing["legacy"]
    assert [p["portal"] for p in legacy["portals"]] == ["MARKTPLAATS", "WEBSITE"]
    marktplaats, website = legacy["portals"]
    assert marktplaats["publish"] == {
        "pending": False, "pendingDate": None, "processing": False, "processingDate": None,
        "error": False, "active": True, "online": True,
        "startDate": "2024-06-24T11:50:12+02:00", "closeDate": "2024-08-24T11:50:12+02:00",
        "remoteAdId": "1234567890",
    }  # fmt: skip
    assert marktplaats["features"] == [
        {"feature": "omhoogplaatsen", "pending": True, "pendingDate": "2024-01-15T08:45:57+01:00",
         "processing": False, "processingDate": None, "error": False, "active": False,
         "startDate": None},
    ]  # fmt: skip
    assert website["publish"]["remoteAdId"] is None
    assert website["publish"]["closeDate"] is None
    assert website["features"] == []


async def test_an_empty_history_is_not_published(gateway: RunningGateway) -> None:
    classified_id = next(
        c for c in gateway.sim.data.empty if gateway.sim.data.tenant_of(c) == "agency-1"
    )
    body = await gateway.query(
        """query($id: ID!) { listing(ref: {classifiedId: $id}) {
             state portals { portal } legacy { adId }
             classified { latestStatus { id } statuses { nodes { id } pageInfo { hasNextPage } } }
        } }""",
        {"id": classified_id},
    )
    assert body == {
        "data": {
            "listing": {
                "state": "NOT_PUBLISHED",
                "portals": [],
                "legacy": None,
                "classified": {
                    "latestStatus": None,
                    "statuses": {"nodes": [], "pageInfo": {"hasNextPage": False}},
                },
            }
        }
    }
