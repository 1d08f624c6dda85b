"""The gRPC server around the service: errors, metadata, health, reflection, streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.app import create_app
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import LOOPBACK_TLS, RunningGateway, run_gateway, serve_app, settings_for

TENANT = "agency-1"
SECRET = "webhook-secret-0123456789"
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    # Legacy read anew by every call: faults injected between calls apply at once.
    async with run_gateway(simulator, grpc=True, legacy_cache_ttl_s=0) as running:
        yield running


@pytest.fixture
async def channel(gw: RunningGateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(gw.grpc_address) as opened:
        yield opened


def a_listing(gw: RunningGateway, tenant: str = TENANT) -> tuple[str, int, int]:
    item = next(
        item for item in gw.sim.data.listings if gw.sim.data.tenant_of(item.classified_id) == tenant
    )
    return item.classified_id, item.user_id, item.ad_id


async def test_a_failing_legacy_source_leaves_the_v3_part_and_a_coded_error(
    gw: RunningGateway, channel: grpc.aio.Channel
) -> None:
    classified_id, user_id, ad_id = a_listing(gw)
    gw.sim.state.add_fault("legacy", "error", status=500)
    listing = await pb_grpc.ListingStatusServiceStub(channel).GetListing(
        pb.GetListingRequest(
            ref=pb.ListingRef(
                classified_id=classified_id, legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id)
            )
        )
    )
    assert listing.classified.latest_status.id  # the V3 part is there
    assert not listing.HasField("legacy")
    failed = {(error.field, error.code, error.provider) for error in listing.errors}
    assert failed == {
        (field, "UPSTREAM_UNAVAILABLE", pb.PROVIDER_LEGACY)
        for field in ("state", "portals", "legacy")
    }
    assert all("Traceback" not in error.message for error in listing.errors)


async def test_whole_call_failures_map_to_status_codes(
    gw: RunningGateway, channel: grpc.aio.Channel
) -> None:
    stub = pb_grpc.ListingStatusServiceStub(channel)
    _, user_id, ad_id = a_listing(gw)
    by_legacy = pb.GetListingRequest(
        ref=pb.ListingRef(legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id))
    )
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetListing(pb.GetListingRequest(ref=pb.ListingRef(classified_id="no-such-id")))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    gw.sim.state.add_fault("legacy", "error", status=503)
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await stub.GetListing(by_legacy)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("gateway-code", "UPSTREAM_UNAVAILABLE") in tuple(down.value.trailing_metadata() or ())
    assert "Traceback" not in (down.value.details() or "")
    # V3 does not know the classified, but legacy could not be read: it may know the ad.
    both = pb.ListingRef(
        classified_id="no-such-id", legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id)
    )
    with pytest.raises(grpc.aio.AioRpcError) as half_known:
        await stub.GetListing(pb.GetListingRequest(ref=both))
    assert half_known.value.code() == grpc.StatusCode.UNAVAILABLE
    # An upstream refusal other than of the credentials: the request as asked will not do.
    gw.sim.state.clear_faults()
    gw.sim.state.add_fault("legacy", "error", status=400)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetListing(by_legacy)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("gateway-code", "UPSTREAM_REJECTED") in tuple(refused.value.trailing_metadata() or ())


async def test_passthrough_without_credentials_is_unauthenticated(
    simulator: RunningSimulator,
) -> None:
    classified_id = simulator.sim.data.listings[0].classified_id
    async with (
        run_gateway(simulator, grpc=True, v3_auth="passthrough") as gw,
        grpc.aio.insecure_channel(gw.grpc_address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.ListingStatusServiceStub(channel).GetListing(
                pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert simulator.sim.state.calls("v3") == 0


async def test_metadata_picks_the_agency_and_continues_the_trace(
    gw: RunningGateway, channel: grpc.aio.Channel
) -> None:
    other = next(tenant for tenant in gw.sim.data.tenants if tenant != TENANT)
    classified_id, _, _ = a_listing(gw, other)
    request = pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
    request.read_mask.paths.append("classified.latest_status")
    listing = await pb_grpc.ListingStatusServiceStub(channel).GetListing(
        request, metadata=(("x-intermediary-id", other), ("traceparent", TRACE))
    )
    assert listing.classified.latest_status.id
    sent = [r for r in gw.sim.state.requests if r.endpoint == "classified_statuses"]
    assert sent and all(r.headers["traceparent"].split("-")[1] == TRACE.split("-")[1] for r in sent)


async def test_the_callers_deadline_bounds_the_upstream_work(
    gw: RunningGateway, channel: grpc.aio.Channel
) -> None:
    _, user_id, ad_id = a_listing(gw)
    gw.sim.state.add_fault("legacy", "timeout", delay_s=20)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.ListingStatusServiceStub(channel).GetListing(
            pb.GetListingRequest(
                ref=pb.ListingRef(legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id))
            ),
            timeout=0.3,
        )
    # The upstream read gets the caller's remaining time, not its own 5 s, so the call
    # usually says why before the caller gives up (test_deadlines pins the bound itself).
    assert caught.value.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


async def test_health_serves_and_turns_not_serving_at_the_stop_signal(
    gw: RunningGateway, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "listing.v1.ListingStatusService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    gw.app.state.grpc.begin_shutdown()  # what `serve` and `demo` do at the first signal
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    # The grace period runs from the signal, shared with the HTTP side's drain.
    running = gw.app.state.grpc
    assert running.grace_left() < running.grace_s
    # Calls still in reach are answered while the gateway drains.
    classified_id, _, _ = a_listing(gw)
    listing = await pb_grpc.ListingStatusServiceStub(channel).GetListing(
        pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
    )
    assert listing.classified.id == classified_id


async def test_health_turns_not_serving_when_the_app_stops(simulator: RunningSimulator) -> None:
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(run_gateway(simulator, grpc=True))
        async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            # Stop the gateway (uvicorn, then its lifespan) while the watch is open.
            stopping = asyncio.ensure_future(stack.pop_all().aclose())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
        await stopping


async def test_reflection_lists_and_describes_the_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask(
        request: reflection_pb2.ServerReflectionRequest,
    ) -> reflection_pb2.ServerReflectionResponse:
        call = stub.ServerReflectionInfo(iter([request]))
        answers = [answer async for answer in call]
        return answers[0]

    listed = await ask(reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in listed.list_services_response.service}
    assert {"listing.v1.ListingStatusService", "grpc.health.v1.Health"} <= names
    described = await ask(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="listing.v1.ListingStatusService"
        )
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    service = next(f for f in files if f.package == "listing.v1").service[0]
    assert [method.name for method in service.method] == [
        "GetListing",
        "BatchGetListings",
        "ListClassifiedStatuses",
        "WatchClassifiedStatus",
        "WatchListings",
    ]


async def append_upstream(gw: RunningGateway, classified_id: str, status: str) -> None:
    """A new status at V3 (the simulator's control route), which posts it to the gateway."""
    async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
        response = await client.post(
            f"{gw.running_sim.control_url}/classifieds/{classified_id}/statuses",
            json={"status": status},
        )
    response.raise_for_status()


async def test_watch_streams_an_event_appended_upstream_and_ends_when_the_caller_cancels(
    simulator: RunningSimulator,
) -> None:
    async with (
        run_gateway(
            simulator, grpc=True, public=True, webhook_secret=SECRET, webhook_subscribe=True
        ) as gw,
        grpc.aio.insecure_channel(gw.grpc_address) as channel,
    ):
        watched, other = gw.sim.data.tenants[TENANT][1:3]
        events = gw.app.state.runtime.events
        call = pb_grpc.ListingStatusServiceStub(channel).WatchClassifiedStatus(
            pb.WatchClassifiedStatusRequest(classified_ids=[watched])
        )
        await call.initial_metadata()  # the subscription is in place
        await append_upstream(gw, other, "UPDATING")
        await append_upstream(gw, watched, "UPDATED")
        received = await call.read()
        assert received.classified_id == watched
        assert received.status.status == pb.CLASSIFIED_STATUS_CODE_UPDATED
        assert received.received_at.seconds > 0
        assert len(events.subscribers) == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call.read()
        # The server learns of the cancellation asynchronously; the bus says when it left.
        await events.membership.until(lambda: not events.subscribers)
        assert call.cancelled()


async def test_client_tokens_guard_the_service_but_not_health_or_reflection(
    simulator: RunningSimulator,
) -> None:
    classified_id = simulator.sim.data.tenants[TENANT][0]
    request = pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
    async with (
        run_gateway(simulator, grpc=True, client_tokens="t0ken-one,t0ken-two") as gw,
        grpc.aio.insecure_channel(gw.grpc_address) as channel,
    ):
        stub = pb_grpc.ListingStatusServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetListing(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        watch = stub.WatchClassifiedStatus(pb.WatchClassifiedStatusRequest())
        with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
            await watch.read()
        assert refused_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert gw.calls("v3") == 0
        listing = await stub.GetListing(request, metadata=(("authorization", "Bearer t0ken-two"),))
        assert listing.classified.id == classified_id
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert [a async for a in reflection][-1].list_services_response.service


async def test_calls_are_counted_by_method_and_outcome(
    gw: RunningGateway, channel: grpc.aio.Channel
) -> None:
    stub = pb_grpc.ListingStatusServiceStub(channel)
    classified_id, user_id, ad_id = a_listing(gw)
    both = pb.ListingRef(
        classified_id=classified_id, legacy=pb.LegacyAdRef(user_id=user_id, ad_id=ad_id)
    )
    await stub.GetListing(pb.GetListingRequest(ref=both))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetListing(pb.GetListingRequest(ref=pb.ListingRef()))
    gw.sim.state.add_fault("legacy", "error", status=500)
    partial = await stub.GetListing(pb.GetListingRequest(ref=both))
    assert partial.errors
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    text = (await gw.client.get("/metrics")).text
    for outcome in ("ok", "rejected", "partial"):
        line = f'gateway_requests_total{{operation="grpc.GetListing",outcome="{outcome}"}} 1.0'
        assert line in text
    assert "grpc.health" not in text and "Health" not in text


async def test_open_watch_streams_end_cleanly_when_the_gateway_stops(
    simulator: RunningSimulator,
) -> None:
    async with AsyncExitStack() as stack:
        gw = await stack.enter_async_context(run_gateway(simulator, grpc=True))
        async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
            call = pb_grpc.ListingStatusServiceStub(channel).WatchClassifiedStatus(
                pb.WatchClassifiedStatusRequest()
            )
            await call.initial_metadata()
            stopping = asyncio.ensure_future(stack.pop_all().aclose())
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
        await stopping


async def test_watch_streams_past_the_process_bound_are_resource_exhausted(
    simulator: RunningSimulator,
) -> None:
    async with (
        run_gateway(simulator, grpc=True, max_subscriptions=2) as gw,
        grpc.aio.insecure_channel(gw.grpc_address) as channel,
    ):
        stub = pb_grpc.ListingStatusServiceStub(channel)
        events = gw.app.state.runtime.events
        first = stub.WatchClassifiedStatus(pb.WatchClassifiedStatusRequest(classified_ids=["c-1"]))
        second = stub.WatchClassifiedStatus(pb.WatchClassifiedStatusRequest())
        for call in (first, second):
            await call.initial_metadata()
        refused = stub.WatchClassifiedStatus(
            pb.WatchClassifiedStatusRequest(classified_ids=["c-2"])
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailing = dict(caught.value.trailing_metadata() or ())
        assert trailing["gateway-code"] == "OVERLOADED"
        assert int(trailing["gateway-retry-after"]) > 0
        assert len(events.subscribers) == 2
        # A stream that ends gives its place back.
        first.cancel()
        await events.membership.until(lambda: len(events.subscribers) == 1)
        third = stub.WatchClassifiedStatus(pb.WatchClassifiedStatusRequest(classified_ids=["c-3"]))
        await third.initial_metadata()
        assert len(events.subscribers) == 2
        second.cancel()
        third.cancel()


async def test_health_follows_readiness_while_serving(simulator: RunningSimulator) -> None:
    """Both circuit breakers open: /readyz says 503 and gRPC health NOT_SERVING; once they
    half-open (the injected clock moves past the reset), both say ready again."""
    now = [1000.0]
    settings = settings_for(
        simulator,
        grpc_port=0,
        grpc_health_interval_s=0.01,
        breaker_failures=1,
        upstream_retries=0,
        warm_up=False,
    )
    app = create_app(settings, grpc=True, clock=lambda: now[0])
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url, verify=LOOPBACK_TLS) as client,
        grpc.aio.insecure_channel(app.state.grpc.address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        item = simulator.sim.data.listings[0]
        simulator.sim.state.add_fault("v3", "error", status=500)
        simulator.sim.state.add_fault("legacy", "error", status=500)
        with pytest.raises(grpc.aio.AioRpcError):
            await pb_grpc.ListingStatusServiceStub(channel).GetListing(
                pb.GetListingRequest(
                    ref=pb.ListingRef(
                        classified_id=item.classified_id,
                        legacy=pb.LegacyAdRef(user_id=item.user_id, ad_id=item.ad_id),
                    )
                )
            )
        assert (await client.get("/readyz")).status_code == 503
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        named = health_pb2.HealthCheckRequest(service="listing.v1.ListingStatusService")
        assert (await health.Check(named)).status == health_pb2.HealthCheckResponse.NOT_SERVING

        simulator.sim.state.clear_faults()
        now[0] += settings.breaker_reset_s + 1  # both breakers half-open: ready again
        assert (await client.get("/readyz")).status_code == 200
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        assert (await health.Check(named)).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
