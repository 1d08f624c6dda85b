"""Callers name the V3 agency (`X-Intermediary-Id`, gRPC metadata `x-intermediary-id`); with
GATEWAY_V3_AGENCIES only those agencies and the default may be named. Another is refused as
the caller's mistake on both edges, before any token request: cycling through invented
agencies cannot make the gateway fetch a token per agency."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from gateway.config import Settings
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway, settings_for

LATEST = """
query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { id } } } }"""


def classified_of(gw: RunningGateway, tenant: str) -> str:
    return gw.sim.data.tenants[tenant][1]


async def latest(gw: RunningGateway, classified_id: str, agency: str) -> dict[str, Any]:
    return await gw.query(LATEST, {"id": classified_id}, headers={"x-intermediary-id": agency})


def test_the_allow_list_is_read_comma_separated(simulator: RunningSimulator) -> None:
    settings: Settings = settings_for(simulator, v3_agencies=" agency-2, agency-3 ,")
    assert settings.v3_agencies == ("agency-2", "agency-3")
    assert settings_for(simulator).v3_agencies == ()  # empty: any agency


async def test_an_agency_outside_the_allow_list_is_refused_before_any_token_request(
    simulator: RunningSimulator,
) -> None:
    async with (
        run_gateway(simulator, grpc=True, v3_agencies="agency-2") as gw,
        grpc.aio.insecure_channel(gw.grpc_address) as channel,
    ):
        tokens_at_start = gw.calls("token")  # the warm-up's, for the default agency-1
        stub = pb_grpc.ListingStatusServiceStub(channel)
        for invented in ("agency-3", "agency-4711"):
            body = await latest(gw, classified_of(gw, "agency-3"), invented)
            assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
            assert "agency" in body["errors"][0]["message"]
            metadata = (("x-intermediary-id", invented),)
            request = pb.GetListingRequest(ref=pb.ListingRef(classified_id="c-1"))
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.GetListing(request, metadata=metadata)
            assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            watch = stub.WatchClassifiedStatus(pb.WatchClassifiedStatusRequest(), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as stream:
                await watch.read()
            assert stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert gw.calls("token") == tokens_at_start
        assert gw.calls("v3") == 0

        # The listed agency and the default one are served, one token each.
        for allowed in ("agency-2", "agency-1"):
            body = await latest(gw, classified_of(gw, allowed), allowed)
            assert "errors" not in body, body
        assert gw.calls("token") == 2


async def test_without_an_allow_list_any_agency_may_be_named(simulator: RunningSimulator) -> None:
    async with run_gateway(simulator) as gw:
        body = await latest(gw, classified_of(gw, "agency-3"), "agency-3")
        assert "errors" not in body, body
