"""Admission control on /graphql and unary gRPC calls: a burst beyond capacity is refused at
once, admitted work completes, and both edges draw on one budget.

The admitted requests are held inside the V3 read by a gate the test opens, so "capacity is
full" is a fact the test sets up, not a race against time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest

from gateway.access.admission import AdaptiveLimit, AdmissionControl
from gateway.app import create_app
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import LOOPBACK_TLS, run_gateway, serve_app, settings_for

QUERY = "query Latest($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }"


class GatedV3:
    """The real V3 client, but every read (or only the first `holds`) waits for `gate` once
    it has arrived."""

    def __init__(
        self, real: Any, gate: asyncio.Event, arrivals: int, holds: int | None = None
    ) -> None:
        self.real = real
        self.gate = gate
        self.arrived = 0
        self.all_arrived = asyncio.Event()
        self.expected = arrivals
        self.holds = holds

    async def classified_statuses(self, *args: Any, **kwargs: Any) -> Any:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.all_arrived.set()
        if self.holds is None or self.arrived <= self.holds:
            await self.gate.wait()
        return await self.real.classified_statuses(*args, **kwargs)

    async def media_statuses(self, *args: Any, **kwargs: Any) -> Any:
        return await self.real.media_statuses(*args, **kwargs)


def admission_of(app: Any) -> AdmissionControl:
    control: AdmissionControl = app.state.admission
    return control


async def test_a_burst_beyond_capacity_gets_503_and_admitted_requests_succeed(
    simulator: RunningSimulator,
) -> None:
    settings = settings_for(
        simulator, max_concurrent_requests=2, max_queued_requests=2, queue_timeout_s=30
    )
    ids = [c.classified_id for c in simulator.sim.data.listings[:4]]
    app = create_app(settings)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        gate = asyncio.Event()
        service = app.state.runtime.service
        gated = GatedV3(service.v3, gate, arrivals=2)
        service.v3 = gated

        async def ask(classified_id: str) -> httpx.Response:
            return await client.post(
                "/graphql", json={"query": QUERY, "variables": {"id": classified_id}}
            )

        running = [asyncio.create_task(ask(i)) for i in ids[:2]]
        await gated.all_arrived.wait()  # both slots are taken, inside the upstream read
        queued = [asyncio.create_task(ask(i)) for i in ids[2:]]
        admission = admission_of(app)
        # The two requests reach the queue within a few loop turns; nothing signals it.
        while admission.queued < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.005)

        burst = await asyncio.gather(*(ask(ids[0]) for _ in range(20)))
        assert [r.status_code for r in burst] == [503] * 20
        for response in burst:
            assert response.headers["retry-after"] == "30"
            [error] = response.json()["errors"]
            assert error["extensions"]["code"] == "OVERLOADED"
            assert "data" not in response.json()
        refused = await client.get("/metrics")
        assert 'gateway_admission_refused_total{reason="queue_full"} 20.0' in refused.text
        assert "gateway_admission_queue_depth 2.0" in refused.text
        assert "gateway_admission_in_flight 2.0" in refused.text
        assert "gateway_requests_in_flight 4.0" in refused.text  # running and queued

        gate.set()
        admitted = await asyncio.gather(*running, *queued)
        assert [r.status_code for r in admitted] == [200] * 4
        for response in admitted:
            body = response.json()
            assert "errors" not in body, body
            assert body["data"]["listing"]["classified"] is not None
        metrics = (await client.get("/metrics")).text
        # Refused before its body is read: the operation is not known.
        assert 'gateway_requests_total{operation="-",outcome="overloaded"} 20.0' in metrics
        assert 'gateway_requests_total{operation="Latest",outcome="ok"} 4.0' in metrics


async def test_a_queued_request_gives_up_after_the_queue_timeout(
    simulator: RunningSimulator,
) -> None:
    settings = settings_for(
        simulator, max_concurrent_requests=1, max_queued_requests=5, queue_timeout_s=0.05
    )
    app = create_app(settings)
    classified_id = simulator.sim.data.listings[0].classified_id
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        gate = asyncio.Event()
        gated = GatedV3(app.state.runtime.service.v3, gate, arrivals=1)
        app.state.runtime.service.v3 = gated
        payload = {"query": QUERY, "variables": {"id": classified_id}}
        held = asyncio.create_task(client.post("/graphql", json=payload))
        await gated.all_arrived.wait()
        waited = await client.post("/graphql", json=payload)
        assert waited.status_code == 503
        assert waited.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
        gate.set()
        assert (await held).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'gateway_admission_refused_total{reason="queue_timeout"} 1.0' in metrics


async def test_unary_grpc_calls_share_the_http_budget_and_watch_streams_take_no_turn(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(
        simulator, grpc=True, max_concurrent_requests=1, max_queued_requests=0, queue_timeout_s=30
    ) as gw:
        first, second = gw.sim.data.tenants["agency-1"][:2]
        gate = asyncio.Event()
        service = gw.app.state.runtime.service
        # Only the first read is held: a call let through by mistake would answer, not hang.
        gated = GatedV3(service.v3, gate, arrivals=1, holds=1)
        service.v3 = gated

        def get(classified_id: str) -> pb.GetListingRequest:
            request = pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
            request.read_mask.paths.append("classified.latest_status")
            return request

        async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
            stub = pb_grpc.ListingStatusServiceStub(channel)
            # An open watch stream is long-lived: it is not admitted, so it holds no turn.
            watch = stub.WatchClassifiedStatus(pb.WatchClassifiedStatusRequest())
            await watch.initial_metadata()
            held = asyncio.ensure_future(stub.GetListing(get(first)))
            await gated.all_arrived.wait()  # the only turn is taken, inside the upstream read

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetListing(get(second))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.value.details() == "The gateway is at capacity; retry shortly."
            trailers = dict(refused.value.trailing_metadata() or ())
            assert trailers["gateway-code"] == "OVERLOADED"
            assert trailers["gateway-retry-after"] == "30"
            # The same budget: HTTP is refused while a gRPC call holds the turn.
            http = await gw.client.post(
                "/graphql", json={"query": QUERY, "variables": {"id": second}}
            )
            assert http.status_code == 503
            assert gated.arrived == 1  # neither refused request reached an upstream

            gate.set()
            listing = await held
            assert listing.classified.latest_status.raw_status
            watch.cancel()
        metrics = (await gw.client.get("/metrics")).text
        assert 'gateway_requests_total{operation="grpc.GetListing",outcome="overloaded"} 1.0' in (
            metrics
        )
        assert 'gateway_requests_total{operation="grpc.GetListing",outcome="ok"} 1.0' in metrics
        assert 'gateway_admission_refused_total{reason="queue_full"} 2.0' in metrics


# --- the limit finds itself -----------------------------------------------------------------


def test_the_limit_grows_while_the_loop_keeps_up_and_falls_when_it_lags() -> None:
    limit = AdaptiveLimit(floor=4, ceiling=256, lag_target_s=0.02)
    start = limit.value
    assert limit.update(0.001, saturated=False) == start  # unused: no evidence more would help
    grown = [limit.update(0.001, saturated=True) for _ in range(40)]
    assert grown == sorted(grown) and grown[-1] == 256  # light requests: up to the ceiling
    for _ in range(3):
        limit.update(0.015, saturated=True)  # between half the target and the target: held
    assert limit.value == 256
    fallen = [limit.update(0.2, saturated=True) for _ in range(40)]
    assert fallen == sorted(fallen, reverse=True) and fallen[-1] == 4  # heavy: down to the floor


def test_a_full_core_stops_the_limit_growing_however_small_the_lag() -> None:
    # A loop busy in many short steps keeps its lag small while the core is full.
    limit = AdaptiveLimit(floor=4, ceiling=256, lag_target_s=0.02)
    for _ in range(3):
        limit.update(0.001, saturated=True, cpu_share=0.3)
    held = limit.value
    assert held > 16
    for _ in range(30):
        assert limit.update(0.001, saturated=True, cpu_share=0.95) == held


def test_a_floor_above_the_ceiling_is_the_ceiling() -> None:
    limit = AdaptiveLimit(floor=4, ceiling=2, lag_target_s=0.02)
    assert limit.value == 2
    assert limit.update(1.0, saturated=True) == 2
    assert limit.update(0.0, saturated=True) == 2


async def test_a_grown_limit_lets_waiting_requests_in_at_once() -> None:
    from gateway.observability import Metrics

    metrics = Metrics()
    control = AdmissionControl(
        max_concurrent=64, min_concurrent=1, max_queued=8, queue_timeout_s=30, metrics=metrics
    )
    for _ in range(10):
        control.adjust(1.0)  # a lagging loop: the limit falls to its floor
    assert control.limit.value == 1
    await control.enter()
    waiting = [asyncio.ensure_future(control.enter()) for _ in range(3)]
    await asyncio.sleep(0)
    assert control.queued == 3 and control.running == 1
    control.adjust(0.0)  # the loop keeps up and the limit was reached: it grows
    grown = control.limit.value
    assert grown >= 2 and control.running == min(4, grown)
    while control.limit.value < 4:
        control.adjust(0.0)
    await asyncio.gather(*waiting)  # admitted without anyone leaving
    assert control.running == 4 and control.queued == 0
    assert metrics.registry.get_sample_value("gateway_admission_limit") == control.limit.value >= 2
    for _ in range(4):
        control.leave()
    assert control.running == 0


async def test_a_request_that_stops_waiting_gives_its_turn_to_the_next() -> None:
    from gateway.observability import Metrics

    control = AdmissionControl(
        max_concurrent=1, max_queued=8, queue_timeout_s=30, metrics=Metrics()
    )
    await control.enter()
    gone = asyncio.ensure_future(control.enter())
    next_one = asyncio.ensure_future(control.enter())
    await asyncio.sleep(0)
    gone.cancel()
    control.leave()
    await next_one
    assert control.running == 1 and control.queued == 0
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_burst_of_heavy_requests_is_answered_with_data_or_a_fast_refusal(
    simulator: RunningSimulator,
) -> None:
    # Defaults for admission: the limit, not a number set here, decides who runs.
    listings = simulator.sim.data.listings
    refs = [
        {"classifiedId": item.classified_id, "legacy": {"userId": item.user_id, "adId": item.ad_id}}
        for item in listings[: min(50, len(listings))]
    ]
    query = (
        "query Heavy($refs: [ListingRef!]!) { listings(refs: $refs) { id state "
        "portals { portal state } classified { latestStatus { status } } } }"
    )
    async with run_gateway(simulator, max_listings=200) as gw:
        answers = await asyncio.gather(
            *(
                gw.client.post("/graphql", json={"query": query, "variables": {"refs": refs}})
                for _ in range(96)
            )
        )
        for answer in answers:
            if answer.status_code == 503:
                [error] = answer.json()["errors"]
                assert error["extensions"]["code"] == "OVERLOADED"
            else:
                assert answer.status_code == 200
                assert len(answer.json()["data"]["listings"]) == len(refs)
        metrics = (await gw.client.get("/metrics")).text
        assert "gateway_admission_limit " in metrics
