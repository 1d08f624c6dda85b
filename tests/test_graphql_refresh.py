"""refreshListing reads upstream anew and replaces the cached pages."""

from __future__ import annotations

from gateway_harness import RunningGateway

QUERY = """query($id: ID!, $user: Int!, $ad: Int!) {
  listing(ref: {classifiedId: $id, legacy: {userId: $user, adId: $ad}}) {
    state classified { latestStatus { status } } } }"""
REFRESH = """mutation($id: ID!, $user: Int!, $ad: Int!) {
  refreshListing(ref: {classifiedId: $id, legacy: {userId: $user, adId: $ad}}) {
    state classified { latestStatus { status } } } }"""


async def test_refresh_bypasses_the_cache_and_forces_legacy(gateway: RunningGateway) -> None:
    listing = next(
        item
        for item in gateway.sim.data.listings
        if gateway.sim.data.tenant_of(item.classified_id) == "agency-1"
    )
    variables = {"id": listing.classified_id, "user": listing.user_id, "ad": listing.ad_id}
    before = await gateway.query(QUERY, variables)
    assert "errors" not in before, before
    v3_calls = gateway.calls("v3", "classified_statuses")

    await gateway.sim.state.append_status(
        listing.classified_id,
        {"portals": ["SL"], "status": "DELETED", "message": "Classified deleted",
         "statusDate": "2030-01-01T00:00:00.000Z"},
    )  # fmt: skip
    stale = await gateway.query(QUERY, variables)
    assert stale == before  # served from the cache
    assert gateway.calls("v3", "classified_statuses") == v3_calls

    refreshed = await gateway.query(REFRESH, variables)
    assert refreshed["data"]["refreshListing"]["classified"]["latestStatus"]["status"] == "DELETED"
    assert gateway.calls("v3", "classified_statuses") > v3_calls
    forced = [r.body for r in gateway.sim.state.requests if r.endpoint == "status_post"]
    assert forced[-1]["force"] is True
    assert all(body.get("force") is not True for body in forced[:-1])

    after = await gateway.query(QUERY, variables)
    assert after["data"]["listing"]["classified"]["latestStatus"]["status"] == "DELETED"


async def test_a_refresh_whose_upstream_fails_fails_that_source_only(
    gateway: RunningGateway,
) -> None:
    listing = next(
        item
        for item in gateway.sim.data.listings
        if gateway.sim.data.tenant_of(item.classified_id) == "agency-1"
    )
    variables = {"id": listing.classified_id, "user": listing.user_id, "ad": listing.ad_id}
    assert "errors" not in await gateway.query(QUERY, variables)  # pages cached
    gateway.sim.state.add_fault("v3", "error", status=503, count=3)  # the try and both retries
    refreshed = await gateway.query(REFRESH, variables)
    errors = refreshed["errors"]
    assert {(e["extensions"]["code"], e["extensions"]["upstream"]) for e in errors} == {
        ("UPSTREAM_UNAVAILABLE", "classifieds-v3")
    }
    listing_data = refreshed["data"]["refreshListing"]
    assert listing_data["state"] is None  # it needs both sources
    assert listing_data["classified"]["latestStatus"] is None
    forced = [r.body for r in gateway.sim.state.requests if r.endpoint == "status_post"]
    assert forced[-1]["force"] is True  # legacy was read anew all the same
    # The refresh dropped the cached pages before it failed: the next read goes upstream.
    reads = gateway.calls("v3", "classified_statuses")
    after = await gateway.query(QUERY, variables)
    assert "errors" not in after
    assert gateway.calls("v3", "classified_statuses") > reads
