"""Cost limits before any upstream call: root fields, the upstream read estimate, and
introspection switched off."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from gateway.domain.cursors import KeysetCursor, encode_cursor
from gateway.domain.models import LegacyAdKey, ListingRef
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.service.histories import MAX_HISTORY_PAGES
from gateway.service.plan import ClassifiedSelection, ListingSelection, MediaSelection, PageArgs
from gateway.service.plan_cost import read_cost, request_cost
from gateway.simulator import RunningSimulator
from gateway.simulator.data import Listing

from gateway_harness import RunningGateway, run_gateway

GRAPHQL_RESPONSE = "application/graphql-response+json"


def agency_listings(gw: RunningGateway, count: int) -> list[Listing]:
    data = gw.sim.data
    return [li for li in data.listings if data.tenant_of(li.classified_id) == "agency-1"][:count]


def ref_of(listing: Listing) -> dict[str, Any]:
    return {
        "classifiedId": listing.classified_id,
        "legacy": {"userId": listing.user_id, "adId": listing.ad_id},
    }


def upstream_calls(gw: RunningGateway) -> int:
    return gw.calls("v3") + gw.calls("legacy")


# --- the estimate, in domain terms ---------------------------------------------------------

REF = ListingRef(classified_id="c-1", legacy=LegacyAdKey(user_id=1, ad_id=2))


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (ListingSelection(), 0),
        (ListingSelection(legacy=True), 1),
        (ListingSelection(classified=ClassifiedSelection(latest=True)), 1),
        (ListingSelection(classified=ClassifiedSelection(pages=(PageArgs(first=100),))), 1),
        # the unified state reads both sources, V3 as a whole history at its page cap
        (ListingSelection(unified=True), 1 + MAX_HISTORY_PAGES),
        # two asks of one classified: one whole-history read, pages cut from it, and each
        # ask once more for a history cut at its cap
        (
            ListingSelection(
                classified=ClassifiedSelection(latest=True, pages=(PageArgs(first=5),))
            ),
            MAX_HISTORY_PAGES + 2,
        ),
        (
            ListingSelection(
                classified=ClassifiedSelection(
                    media=(
                        MediaSelection("m-1", pages=(PageArgs(),)),
                        MediaSelection("m-2", latest=True),
                    )
                )
            ),
            1 + MAX_HISTORY_PAGES,
        ),
    ],
)
def test_read_cost_follows_the_plan(selection: ListingSelection, expected: int) -> None:
    assert read_cost([REF], selection) == expected


def test_read_cost_counts_distinct_listings_and_keyset_cursors_as_histories() -> None:
    keyset = encode_cursor(KeysetCursor(datetime(2026, 1, 1, tzinfo=UTC), "s-1"))
    one_page = ClassifiedSelection(pages=(PageArgs(first=10, after=keyset),))
    assert read_cost([REF], ListingSelection(classified=one_page)) == MAX_HISTORY_PAGES + 1
    selection = ListingSelection(legacy=True, classified=ClassifiedSelection(latest=True))
    other = ListingRef(classified_id="c-2", legacy=LegacyAdKey(user_id=1, ad_id=3))
    assert read_cost([REF, REF, other], selection) == 4
    assert read_cost([REF], ListingSelection(), refresh=True) == 1 + MAX_HISTORY_PAGES


def test_root_fields_asking_one_classified_are_priced_as_they_are_planned_together() -> None:
    """Its latest status in one root field, a page in another: one whole-history read, as
    the service plans them (`ListingRequest.expect`), not one read each."""
    latest = ListingSelection(classified=ClassifiedSelection(latest=True))
    page = ListingSelection(classified=ClassifiedSelection(pages=(PageArgs(first=5),)))
    assert request_cost([([REF], latest), ([REF], page)]) == MAX_HISTORY_PAGES + 2
    assert request_cost([([REF], latest), ([REF], latest)]) == 1  # one ask, made twice
    other = ListingRef(classified_id="c-2")
    assert request_cost([([REF], latest), ([other], page)]) == 2  # one read each
    legacy = ListingSelection(legacy=True)
    assert request_cost([([REF], legacy), ([REF, other], legacy)]) == 1  # one ad, read once
    # Refreshes run one after the other, each reading anew: they add up.
    once = read_cost([REF], latest, refresh=True)
    assert request_cost([([REF], latest), ([REF], latest)], refresh=True) == 2 * once


# --- over GraphQL ------------------------------------------------------------------------------


async def test_too_many_root_fields_is_too_complex(gateway: RunningGateway) -> None:
    field = 'listing(ref: {classifiedId: "c-1"}) { id }'
    query = "{ " + " ".join(f"t{i}: {field}" for i in range(21)) + " }"
    response = await gateway.client.post(
        "/graphql", json={"query": query}, headers={"accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX", "cost": 21, "limit": 20}
    ok = await gateway.query("{ " + " ".join(f"t{i}: {field}" for i in range(20)) + " }")
    assert "errors" not in ok, ok
    assert "errors" not in await gateway.query(
        "{ " + " ".join(f"t{i}: __typename" for i in range(200)) + " }"
    )


UNIFIED = "query($refs: [ListingRef!]!) { listings(refs: $refs) { state } }"
LATEST = (
    "query($refs: [ListingRef!]!) { listings(refs: $refs) "
    "{ classified { latestStatus { status } } } }"
)


async def test_a_request_over_the_upstream_budget_is_refused_before_any_call(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, max_upstream_cost=120) as gw:
        refs = [ref_of(li) for li in agency_listings(gw, 3)]
        gw.sim.state.reset_counters()
        body = await gw.query(UNIFIED, {"refs": refs})
        assert "data" not in body or body["data"] is None
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert error["extensions"]["cost"] == 3 * (1 + MAX_HISTORY_PAGES)
        assert error["extensions"]["limit"] == 120
        assert upstream_calls(gw) == 0
        # Two root fields add up (what they ask of one listing is planned together).
        two = (
            "query($a: [ListingRef!]!) { x: listings(refs: $a) "
            "{ classified { latestStatus { status } } } y: listings(refs: $a) { legacy { adId } } }"
        )
        assert "errors" not in await gw.query(two, {"a": refs})
        cheap = await gw.query(LATEST, {"refs": refs})
        assert "errors" not in cheap, cheap


async def test_the_estimate_bounds_the_reads_actually_made(simulator: RunningSimulator) -> None:
    queries = [
        UNIFIED,
        LATEST,
        "query($refs: [ListingRef!]!) { listings(refs: $refs) { legacy { adId } "
        "classified { latestStatus { status } statuses(first: 3) { nodes { id } } } } }",
        "query($refs: [ListingRef!]!) { listings(refs: $refs) { classified { "
        'media(mediaId: "m-1") { latestStatus { status } statuses(first: 2) { nodes { id } } } } } }',
        # Two root fields asking one listing: planned, and priced, together.
        "query($refs: [ListingRef!]!) { a: listings(refs: $refs) { classified { latestStatus "
        "{ status } } } b: listings(refs: $refs) { classified { statuses(first: 3) { nodes "
        "{ id } } } } }",
    ]
    for query in queries:
        async with run_gateway(simulator, max_upstream_cost=1) as gw:
            refs = [ref_of(li) for li in agency_listings(gw, 2)]
            refused = await gw.query(query, {"refs": refs})
            estimate = refused["errors"][0]["extensions"]["cost"]
        async with run_gateway(simulator) as gw:
            gw.sim.state.reset_counters()
            await gw.query(query, {"refs": refs})
            assert 0 < upstream_calls(gw) <= estimate, query


async def test_a_grpc_call_over_the_upstream_budget_is_refused_as_graphql_is(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, grpc=True, max_upstream_cost=120) as gw:
        listings = agency_listings(gw, 3)
        refs = [
            pb.ListingRef(
                classified_id=li.classified_id,
                legacy=pb.LegacyAdRef(user_id=li.user_id, ad_id=li.ad_id),
            )
            for li in listings
        ]
        gw.sim.state.reset_counters()
        async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
            stub = pb_grpc.ListingStatusServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                # An empty read mask asks for everything: the unified state reads histories.
                await stub.BatchGetListings(pb.BatchGetListingsRequest(refs=refs))
            assert upstream_calls(gw) == 0
            cheap = pb.BatchGetListingsRequest(refs=refs)
            cheap.read_mask.paths.append("classified.latest_status")
            answered = await stub.BatchGetListings(cheap)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailers = dict(refused.value.trailing_metadata() or ())
        # Each listing: its legacy ad, its history, and its latest status (read on its own
        # when the history is cut at its cap).
        cost = 3 * (1 + MAX_HISTORY_PAGES + 1)
        assert trailers == {
            "gateway-code": "QUERY_TOO_COMPLEX",
            "gateway-cost": str(cost),
            "gateway-limit": "120",
        }
        everything = (
            "query($refs: [ListingRef!]!) { listings(refs: $refs) "
            "{ state classified { latestStatus { status } } } }"
        )
        graphql = await gw.query(everything, {"refs": [ref_of(li) for li in listings]})
        assert refused.value.details() == graphql["errors"][0]["message"]
        assert all(listing.classified.latest_status.raw_status for listing in answered.listings)


async def test_introspection_can_be_switched_off(simulator: RunningSimulator) -> None:
    introspection = "{ __schema { queryType { name } } }"
    async with run_gateway(simulator, introspection=False) as gw:
        body = await gw.query(introspection)
        assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert (await gw.query("{ __typename }")) == {"data": {"__typename": "Query"}}
    async with run_gateway(simulator) as gw:
        assert (await gw.query(introspection))["data"]["__schema"]["queryType"]["name"] == "Query"
