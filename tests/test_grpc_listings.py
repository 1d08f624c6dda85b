"""The gRPC listing RPCs over a real `grpc.aio` channel, against the simulator."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gateway.domain import ids
from gateway.domain.models import LegacyAdKey, ListingRef
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

TENANT = "agency-1"


@pytest.fixture
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with run_gateway(simulator, grpc=True) as running:
        yield running


@pytest.fixture
async def stub(gw: RunningGateway) -> AsyncIterator[pb_grpc.ListingStatusServiceStub]:
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        yield pb_grpc.ListingStatusServiceStub(channel)


def tenant_listing(gw: RunningGateway, index: int = 0) -> tuple[str, int, int]:
    listings = [
        item for item in gw.sim.data.listings if gw.sim.data.tenant_of(item.classified_id) == TENANT
    ]
    item = listings[index]
    return item.classified_id, item.user_id, item.ad_id


def history(count: int) -> list[dict[str, Any]]:
    return [
        {"portals": ["SL"], "status": "UPDATED", "message": f"update {day}",
         "statusDate": f"2024-03-{day:02d}T10:00:00.000Z", "statusId": f"status-{day}"}
        for day in range(1, count + 1)
    ]  # fmt: skip


def full_ref(classified_id: str, user_id: int, ad_id: int) -> pb.ListingRef:
    return pb.ListingRef(
        classified_id=classified_id, legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id)
    )


async def test_get_listing_reads_both_sources(
    gw: RunningGateway, stub: pb_grpc.ListingStatusServiceStub
) -> None:
    classified_id, user_id, ad_id = tenant_listing(gw)
    listing = await stub.GetListing(
        pb.GetListingRequest(ref=full_ref(classified_id, user_id, ad_id))
    )
    assert listing.id == ids.listing_id(
        ListingRef(classified_id=classified_id, legacy=LegacyAdKey(user_id, ad_id))
    )
    assert not listing.errors
    assert listing.state != pb.PUBLICATION_STATE_UNSPECIFIED
    providers = {portal.provider for portal in listing.portals}
    assert providers == {pb.PROVIDER_CLASSIFIEDS_V3, pb.PROVIDER_LEGACY}
    assert listing.classified.id == classified_id
    assert listing.classified.HasField("latest_status")
    assert (listing.legacy.user_id, listing.legacy.ad_id) == (user_id, ad_id)
    assert gw.calls("legacy") == 1


async def test_read_mask_limits_the_reads(
    gw: RunningGateway, stub: pb_grpc.ListingStatusServiceStub
) -> None:
    classified_id, user_id, ad_id = tenant_listing(gw)
    request = pb.GetListingRequest(ref=full_ref(classified_id, user_id, ad_id))
    request.read_mask.paths.append("legacy")
    listing = await stub.GetListing(request)
    assert listing.HasField("legacy") and not listing.HasField("classified")
    assert listing.state == pb.PUBLICATION_STATE_UNSPECIFIED and not listing.portals
    assert gw.calls("legacy") == 1
    assert gw.calls("v3") == 0


async def test_batch_keeps_the_order_asked(
    gw: RunningGateway, stub: pb_grpc.ListingStatusServiceStub
) -> None:
    refs = [full_ref(*tenant_listing(gw, index)) for index in (2, 0, 1)]
    response = await stub.BatchGetListings(pb.BatchGetListingsRequest(refs=refs))
    assert [item.ref.classified_id for item in response.listings] == [
        ref.classified_id for ref in refs
    ]
    assert all(not item.errors for item in response.listings)


async def test_list_classified_statuses_pages_with_tokens(
    gw: RunningGateway, stub: pb_grpc.ListingStatusServiceStub
) -> None:
    classified_id = "c0ffee00-0000-4000-8000-000000000001"
    gw.sim.state.put_classified(classified_id, tenant=TENANT, items=history(5))
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await stub.ListClassifiedStatuses(
            pb.ListClassifiedStatusesRequest(
                classified_id=classified_id, page_size=2, page_token=token
            )
        )
        assert 0 < len(page.statuses) <= 2
        seen += [status.id for status in page.statuses]
        token = page.next_page_token
        if not token:
            break
    whole = await stub.ListClassifiedStatuses(
        pb.ListClassifiedStatusesRequest(classified_id=classified_id, page_size=100)
    )
    assert len(seen) == 5
    assert seen == [status.id for status in whole.statuses]
    dates = [status.date.ToDatetime() for status in whole.statuses]
    assert dates == sorted(dates, reverse=True)
    assert not whole.next_page_token


BAD_REQUESTS: dict[str, Any] = {
    "empty ref": pb.GetListingRequest(ref=pb.ListingRef()),
    "blank classified id": pb.GetListingRequest(ref=pb.ListingRef(classified_id="  ")),
    "zero user id": pb.GetListingRequest(
        ref=pb.ListingRef(legacy=pb.LegacyAdRef(user_id=0, ad_id=1))
    ),
    "unknown read-mask path": pb.GetListingRequest(
        ref=pb.ListingRef(classified_id="x"), read_mask={"paths": ["classified.statuses"]}
    ),
    "too many refs": pb.BatchGetListingsRequest(refs=[pb.ListingRef(classified_id="x")] * 201),
    "page too large": pb.ListClassifiedStatusesRequest(classified_id="x", page_size=101),
    "negative page": pb.ListClassifiedStatusesRequest(classified_id="x", page_size=-1),
    "foreign token": pb.ListClassifiedStatusesRequest(classified_id="x", page_token="abc"),
    "no classified id": pb.ListClassifiedStatusesRequest(classified_id=""),
    "UNKNOWN filter": pb.ListClassifiedStatusesRequest(
        classified_id="x", statuses=[pb.CLASSIFIED_STATUS_CODE_UNKNOWN]
    ),
    "empty watched id": pb.WatchClassifiedStatusRequest(classified_ids=[""]),
    "status number the proto lacks": pb.ListClassifiedStatusesRequest(
        classified_id="x", statuses=[999]
    ),
    "portal number the proto lacks": pb.ListClassifiedStatusesRequest(
        classified_id="x", portals=[999]
    ),
    # base64 of "ks:2024-01-01T00:00:00|x": a keyset position whose date has no UTC offset.
    "forged keyset token": pb.ListClassifiedStatusesRequest(
        classified_id="x", page_token="a3M6MjAyNC0wMS0wMVQwMDowMDowMHx4"
    ),
    "a 100 KB read-mask path": pb.GetListingRequest(
        ref=pb.ListingRef(classified_id="x"), read_mask={"paths": ["p" * 100_000]}
    ),
    "more watched ids than GATEWAY_MAX_LISTINGS": pb.WatchClassifiedStatusRequest(
        classified_ids=[f"c-{n}" for n in range(201)]
    ),
}


async def test_bad_arguments_are_refused_before_any_upstream_call(
    gw: RunningGateway, stub: pb_grpc.ListingStatusServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    """INVALID_ARGUMENT with short details (they travel as metadata, which clients bound),
    never INTERNAL, and nothing logged as an error."""
    caplog.set_level(logging.INFO)
    for name, request in BAD_REQUESTS.items():
        if isinstance(request, pb.WatchClassifiedStatusRequest):
            call = stub.WatchClassifiedStatus(request)
            method = call.read
        else:
            method = {
                pb.GetListingRequest: lambda r: stub.GetListing(r),
                pb.BatchGetListingsRequest: lambda r: stub.BatchGetListings(r),
                pb.ListClassifiedStatusesRequest: lambda r: stub.ListClassifiedStatuses(r),
            }[type(request)]
            method = functools.partial(method, request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await method()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, caught.value)
        assert ("gateway-code", "BAD_USER_INPUT") in tuple(caught.value.trailing_metadata() or ())
        assert "Traceback" not in (caught.value.details() or ""), name
        assert len(caught.value.details() or "") < 300, name
    assert gw.calls("v3") == 0 and gw.calls("legacy") == 0 and gw.calls("token") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_page_tokens_work_on_both_edges(
    gw: RunningGateway, stub: pb_grpc.ListingStatusServiceStub
) -> None:
    classified_id = "c0ffee00-0000-4000-8000-000000000002"
    gw.sim.state.put_classified(classified_id, tenant=TENANT, items=history(6))
    query = """query($id: ID!, $after: String) { listing(ref: {classifiedId: $id}) {
      classified { statuses(first: 2, after: $after) { nodes { id } pageInfo { endCursor } } } } }"""

    async def graphql_page(after: str | None) -> tuple[list[str], str]:
        body = await gw.query(query, {"id": classified_id, "after": after})
        page = body["data"]["listing"]["classified"]["statuses"]
        return [node["id"] for node in page["nodes"]], page["pageInfo"]["endCursor"]

    first, cursor = await graphql_page(None)
    second = await stub.ListClassifiedStatuses(
        pb.ListClassifiedStatusesRequest(
            classified_id=classified_id, page_size=2, page_token=cursor
        )
    )
    third, _ = await graphql_page(second.next_page_token)
    ids_seen = first + [status.id for status in second.statuses] + third
    assert ids_seen == [f"status-{day}" for day in range(6, 0, -1)]
