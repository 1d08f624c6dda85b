"""gRPC `WatchListings`: the `listingChanged` stream for internal services, over a real
channel: legacy and V3 changes with the listing as it stands, a resume by cursor, and the
refusal of a cursor whose changes are gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from test_listing_changes import HOUR, feed_of, listing_of, poller_of, set_legacy
from test_live_status import append

from gateway.domain.changes import ChangeCursor, LogPosition
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

SECRET = "grpc-changes-secret"


@pytest.fixture
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with run_gateway(
        simulator,
        grpc=True,
        public=True,
        webhook_subscribe=True,
        webhook_secret=SECRET,
        legacy_poll_s=HOUR,
    ) as running:
        yield running


def both(listing: tuple[str, int, int]) -> pb.ListingRef:
    classified_id, user_id, ad_id = listing
    return pb.ListingRef(
        classified_id=classified_id, legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id)
    )


async def watch(gw: RunningGateway, channel: grpc.aio.Channel, **fields: Any) -> Any:
    """A WatchListings call, once the watch is in place (and its ads' first snapshots taken)."""
    call = pb_grpc.ListingStatusServiceStub(channel).WatchListings(
        pb.WatchListingsRequest(**fields)
    )
    await call.initial_metadata()
    await poller_of(gw).baseline()
    return call


async def test_watch_listings_streams_both_sides_and_resumes_after_a_cursor(
    gw: RunningGateway,
) -> None:
    listing = listing_of(gw, 6)
    classified_id, user_id, ad_id = listing
    mask = FieldMask(paths=["state", "portals", "legacy"])
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        call = await watch(gw, channel, refs=[both(listing)], read_mask=mask)
        portal, _ = await set_legacy(gw, user_id, ad_id)
        gw.sim.state.reset_counters()
        await poller_of(gw).poll_once()
        legacy = await call.read()
        assert legacy.provider == pb.PROVIDER_LEGACY
        assert list(legacy.changed_portals) == [pb.Portal.Value(f"PORTAL_{portal}")]
        assert legacy.listing.ref == both(listing)
        assert legacy.listing.legacy.ad_id == ad_id
        assert legacy.listing.state != pb.PUBLICATION_STATE_UNSPECIFIED
        assert gw.calls("legacy") == 1  # the poll; the listing took its answer
        call.cancel()

        await append(gw, classified_id, "DELETING")  # missed by the cancelled call
        await feed_of(gw).settled()
        again = await watch(gw, channel, refs=[both(listing)], after=legacy.cursor)
        missed = await again.read()
        assert missed.provider == pb.PROVIDER_CLASSIFIEDS_V3
        assert missed.received_at.seconds > 0
        assert {p.provider for p in missed.listing.portals} == {
            pb.PROVIDER_CLASSIFIEDS_V3,
            pb.PROVIDER_LEGACY,
        }
        assert missed.cursor != legacy.cursor
        again.cancel()


async def test_a_cursor_that_is_gone_or_not_one_is_invalid_argument(gw: RunningGateway) -> None:
    classified_id = listing_of(gw, 7)[0]
    ref = pb.ListingRef(classified_id=classified_id)
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        stub = pb_grpc.ListingStatusServiceStub(channel)
        gone = ChangeCursor("0123456789", LogPosition(1)).encode()
        for after, reason in ((gone, "cursor_expired"), ("not-a-cursor", None)):
            call = stub.WatchListings(pb.WatchListingsRequest(refs=[ref], after=after))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            trailing = dict(refused.value.trailing_metadata() or ())
            assert trailing.get("gateway-code") == "BAD_USER_INPUT"
            assert trailing.get("gateway-reason") == reason
        for refs in ([], [pb.ListingRef()]):
            call = stub.WatchListings(pb.WatchListingsRequest(refs=refs))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call.read()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not feed_of(gw).subscribers
