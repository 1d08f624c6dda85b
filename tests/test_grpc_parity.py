"""GraphQL and gRPC are two faces of one service: same answers, same upstream calls, one cache."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.process.demo import demo_refs
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

# Every field the gRPC Listing carries, in GraphQL terms.
LISTING_FIELDS = """
  id state
  portals { portal provider state since message actionRequired }
  classified { id latestStatus { id status rawStatus subStatus subStatusDetails message portals
                                 date actionRequired } }
  legacy { userId adId portals { portal
    publish { pending pendingDate processing processingDate error active online startDate
              closeDate remoteAdId }
    features { feature pending pendingDate processing processingDate error active startDate } } }
"""
LISTINGS = f"query($refs: [ListingRef!]!) {{ listings(refs: $refs) {{ {LISTING_FIELDS} }} }}"
USER_A, USER_B = 900_001, 900_002
WEBSITE_ONLINE: list[dict[str, Any]] = [
    {"portal": "website", "features": False,
     "publish": {"active": True, "online": True, "startDate": "2024-03-01 10:00:00"}}
]  # fmt: skip
ENUM_PREFIXES = ("PORTAL_", "PROVIDER_", "PUBLICATION_STATE_", "CLASSIFIED_STATUS_CODE_")


def install_ads(simulator: RunningSimulator, user_id: int, count: int, first_ad: int) -> list[int]:
    ad_ids = list(range(first_ad, first_ad + count))
    for ad_id in ad_ids:
        simulator.sim.state.put_legacy_ad(user_id, ad_id, WEBSITE_ONLINE)
    return ad_ids


@pytest.fixture
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with run_gateway(simulator, grpc=True) as running:
        yield running


async def batch_get(
    gw: RunningGateway, refs: list[pb.ListingRef], mask: tuple[str, ...] = ()
) -> list[pb.Listing]:
    request = pb.BatchGetListingsRequest(refs=refs)
    request.read_mask.paths.extend(mask)
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        response = await pb_grpc.ListingStatusServiceStub(channel).BatchGetListings(request)
    return list(response.listings)


def both_refs(refs: list[tuple[str, int, int]]) -> tuple[list[dict[str, Any]], list[pb.ListingRef]]:
    graphql = [
        {"classifiedId": cid, "legacy": {"userId": user, "adId": ad}} for cid, user, ad in refs
    ]
    grpc_refs = [
        pb.ListingRef(classified_id=cid, legacy=pb.LegacyAdRef(user_id=user, ad_id=ad))
        for cid, user, ad in refs
    ]
    return graphql, grpc_refs


def normal(value: Any) -> Any:
    """One shape for both answers: enum prefixes off, dates parsed, digit strings as ints."""
    if isinstance(value, dict):
        return {key: normal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normal(item) for item in value]
    if isinstance(value, str):
        for prefix in ENUM_PREFIXES:
            if value.startswith(prefix):
                return value.removeprefix(prefix)
        if value.isdigit():
            return int(value)
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def as_graphql(message: pb.Listing, shape: Any) -> Any:
    """The gRPC listing with GraphQL's keys, absent values as None, per `shape`."""
    data = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)

    def pick(value: Any, like: Any) -> Any:
        if isinstance(like, dict):
            value = value or {}
            return {key: pick(value.get(key), sub) for key, sub in like.items()}
        if isinstance(like, list) and like:
            return [pick(item, like[0]) for item in value or []]
        return value

    return pick(data, shape)


async def test_answers_agree_field_by_field_over_the_demo_data(gw: RunningGateway) -> None:
    refs = demo_refs(gw.sim.data, count=100)
    graphql_refs, grpc_refs = both_refs(refs)
    body = await gw.query(LISTINGS, {"refs": graphql_refs})
    assert "errors" not in body, body
    listings = await batch_get(gw, grpc_refs)
    assert len(listings) == len(body["data"]["listings"]) == len(refs) > 1
    for graphql_listing, grpc_listing in zip(body["data"]["listings"], listings, strict=True):
        assert not grpc_listing.errors
        expected = normal(graphql_listing)
        # The widest shape seen decides which keys are compared inside lists.
        assert normal(as_graphql(grpc_listing, _shape(graphql_listing))) == expected


def _shape(value: Any) -> Any:
    """The keys of a GraphQL answer; a list's items merged into one shape."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        merged: Any = None
        for item in value:
            merged = _merge(merged, _shape(item))
        return [merged] if merged is not None else []
    return None


def _merge(left: Any, right: Any) -> Any:
    if isinstance(left, dict) and isinstance(right, dict):
        return {key: _merge(left.get(key), right.get(key)) for key in left | right}
    if isinstance(left, list) and isinstance(right, list):
        return left or right if not (left and right) else [_merge(left[0], right[0])]
    return left if left is not None else right


async def test_150_ads_of_two_users_cost_what_graphql_costs(simulator: RunningSimulator) -> None:
    a_ads = install_ads(simulator, USER_A, 120, 1)
    b_ads = install_ads(simulator, USER_B, 30, 5001)
    graphql_refs = [{"legacy": {"userId": USER_A, "adId": ad}} for ad in a_ads]
    graphql_refs += [{"legacy": {"userId": USER_B, "adId": ad}} for ad in b_ads]
    grpc_refs = [pb.ListingRef(legacy=pb.LegacyAdRef(user_id=USER_A, ad_id=ad)) for ad in a_ads]
    grpc_refs += [pb.ListingRef(legacy=pb.LegacyAdRef(user_id=USER_B, ad_id=ad)) for ad in b_ads]
    counters = simulator.sim.state.counters
    async with run_gateway(simulator, grpc=True, legacy_max_batch=100, legacy_cache_ttl_s=0) as gw:
        body = await gw.query(LISTINGS, {"refs": graphql_refs})
        assert "errors" not in body
        graphql_calls = counters()
        simulator.sim.state.reset_counters()
        listings = await batch_get(gw, grpc_refs)
        grpc_calls = counters()
    assert [item.legacy.ad_id for item in listings] == a_ads + b_ads
    assert {item.state for item in listings} == {pb.PUBLICATION_STATE_ONLINE}
    assert grpc_calls == graphql_calls
    assert grpc_calls["legacy"]["status_post"] == 3


async def test_a_grpc_call_after_graphql_reads_v3_from_the_cache(gw: RunningGateway) -> None:
    refs = demo_refs(gw.sim.data)
    graphql_refs, grpc_refs = both_refs(refs)
    body = await gw.query(
        "query($refs: [ListingRef!]!) { listings(refs: $refs) { state portals { portal } } }",
        {"refs": graphql_refs},
    )
    assert "errors" not in body
    v3_reads = gw.calls("v3")
    assert v3_reads >= len(refs)
    listings = await batch_get(gw, grpc_refs, ("state", "portals", "classified.latest_status"))
    assert gw.calls("v3") == v3_reads  # every V3 page came from the cache
    assert [normal(pb.PublicationState.Name(item.state)) for item in listings] == [
        item["state"] for item in body["data"]["listings"]
    ]
    assert all(item.classified.HasField("latest_status") for item in listings)
