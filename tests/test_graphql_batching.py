"""However a query reaches legacy ads, it costs one POST /status/ per user per chunk."""

from __future__ import annotations

from typing import Any

from gateway.domain import ids
from gateway.domain.models import LegacyAdKey, ListingRef
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

WEBSITE_ONLINE: list[dict[str, Any]] = [
    {
        "portal": "website",
        "publish": {"pending": False, "error": False, "active": True, "online": True,
                    "startDate": "2024-03-01 10:00:00", "remoteAdId": 0},
        "features": False,
    }
]  # fmt: skip

USER_A, USER_B = 900_001, 900_002


def install_ads(simulator: RunningSimulator, user_id: int, count: int, first_ad: int) -> list[int]:
    ad_ids = list(range(first_ad, first_ad + count))
    for ad_id in ad_ids:
        simulator.sim.state.put_legacy_ad(user_id, ad_id, WEBSITE_ONLINE)
    return ad_ids


def refs_literal(user_id: int, ad_ids: list[int]) -> str:
    return ", ".join(f"{{legacy: {{userId: {user_id}, adId: {ad}}}}}" for ad in ad_ids)


async def test_150_ads_of_two_users_cost_three_legacy_calls(simulator: RunningSimulator) -> None:
    a_ads = install_ads(simulator, USER_A, 120, 1)
    b_ads = install_ads(simulator, USER_B, 30, 5001)
    refs = [{"legacy": {"userId": USER_A, "adId": ad}} for ad in a_ads]
    refs += [{"legacy": {"userId": USER_B, "adId": ad}} for ad in b_ads]
    async with run_gateway(simulator, legacy_max_batch=100) as gateway:
        body = await gateway.query(
            "query($refs: [ListingRef!]!) { listings(refs: $refs) { state legacy { adId } } }",
            {"refs": refs},
        )
    assert "errors" not in body
    listings = body["data"]["listings"]
    assert [item["legacy"]["adId"] for item in listings] == a_ads + b_ads
    assert {item["state"] for item in listings} == {"ONLINE"}
    # 120 ads of A in chunks of 100 → 2 calls; 30 ads of B → 1 call; never a per-ad GET.
    assert gateway.calls("legacy", "status_post") == 3
    assert gateway.calls("legacy", "status_get") == 0
    chunk_sizes = sorted(
        len(r.body["adId"]) for r in simulator.sim.state.requests if r.endpoint == "status_post"
    )
    assert chunk_sizes == [20, 30, 100]


async def test_aliases_node_and_single_listings_share_one_batch_per_user(
    gateway: RunningGateway, simulator: RunningSimulator
) -> None:
    a_ads = install_ads(simulator, USER_A, 10, 1)
    b_ads = install_ads(simulator, USER_B, 5, 5001)
    node_id = ids.listing_id(ListingRef(legacy=LegacyAdKey(USER_B, b_ads[-1])))
    query = f"""{{
      first: listings(refs: [{refs_literal(USER_A, a_ads[:5])}]) {{ legacy {{ adId }} }}
      second: listings(refs: [{refs_literal(USER_A, a_ads[5:])}]) {{ portals {{ state }} }}
      one: listing(ref: {{legacy: {{userId: {USER_B}, adId: {b_ads[0]}}}}}) {{ state }}
      two: listing(ref: {{legacy: {{userId: {USER_B}, adId: {b_ads[1]}}}}}) {{ state }}
      third: node(id: "{node_id}") {{ ... on Listing {{ legacy {{ adId }} }} }}
    }}"""
    body = await gateway.query(query)
    assert "errors" not in body, body
    assert body["data"]["third"]["legacy"]["adId"] == b_ads[-1]
    assert len(body["data"]["second"]) == 5
    assert gateway.calls("legacy", "status_post") == 2  # one per user
    assert gateway.calls("legacy", "status_get") == 0


async def test_a_listing_repeated_in_one_request_is_read_once(gateway: RunningGateway) -> None:
    listing = gateway.sim.data.listings[0]
    ref = (
        f'{{classifiedId: "{listing.classified_id}", '
        f"legacy: {{userId: {listing.user_id}, adId: {listing.ad_id}}}}}"
    )
    body = await gateway.query(
        f"{{ a: listing(ref: {ref}) {{ state }} b: listings(refs: [{ref}, {ref}]) {{ portals {{ portal }} }} }}",
        headers={"x-intermediary-id": gateway.sim.data.tenant_of(listing.classified_id)},
    )
    assert "errors" not in body, body
    assert gateway.calls("legacy", "status_post") == 1
    sent = [r.body for r in gateway.sim.state.requests if r.endpoint == "status_post"]
    assert sent[0]["adId"] == [listing.ad_id]


async def test_listings_without_legacy_fields_do_not_call_legacy(gateway: RunningGateway) -> None:
    listing = gateway.sim.data.listings[0]
    body = await gateway.query(
        f"{{ listing(ref: {{legacy: {{userId: {listing.user_id}, adId: {listing.ad_id}}}}}) {{ id legacyAd {{ adId }} }} }}"
    )
    assert body["data"]["listing"]["legacyAd"]["adId"] == listing.ad_id
    assert gateway.calls("legacy") == 0


async def test_result_false_for_one_missing_ad_fails_only_that_ad(
    gateway: RunningGateway, simulator: RunningSimulator
) -> None:
    simulator.sim.state.legacy_missing_ads = "refuse"  # the upstream refuses, naming the ad
    ads = install_ads(simulator, USER_A, 3, 1)
    missing = 999
    body = await gateway.query(
        f"{{ listings(refs: [{refs_literal(USER_A, [ads[0], missing, *ads[1:]])}]) "
        "{ state legacy { adId } } }"
    )
    listings = body["data"]["listings"]
    assert [item["legacy"] and item["legacy"]["adId"] for item in listings] == [
        ads[0], None, *ads[1:]
    ]  # fmt: skip
    assert [item["state"] for item in listings] == ["ONLINE", None, "ONLINE", "ONLINE"]
    assert {(tuple(e["path"][:2]), e["extensions"]["code"]) for e in body["errors"]} == {
        (("listings", 1), "NOT_FOUND")
    }
    assert gateway.calls("legacy", "status_post") == 2  # the batch, then once more without 999
