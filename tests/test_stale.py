"""Stale-if-error: a past-TTL V3 page answers when V3 fails, marked, within its window only.

The gateway runs on an injected clock, so pages age without sleeping; V3 fails with a
malformed body, which is not retried, so each read fails at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
from google.protobuf.duration_pb2 import Duration

from gateway.app import create_app
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import LOOPBACK_TLS, serve_app, settings_for

SECRET = "webhook-secret-0123456789"
QUERY = """
query Latest($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def gateway(
    simulator: RunningSimulator, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(simulator, cache_ttl_s=30, cache_stale_s=300, webhook_secret=SECRET)
    app = create_app(settings, clock=clock)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client,
    ):
        yield client


async def latest(
    client: httpx.AsyncClient, classified_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": QUERY, "variables": {"id": classified_id}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_a_past_ttl_page_answers_while_v3_fails_and_says_how_old_it_is(
    simulator: RunningSimulator,
) -> None:
    clock = FakeClock()
    cid = simulator.sim.data.tenants["agency-1"][0]
    async with gateway(simulator, clock) as client:
        fresh = await latest(client, cid)
        assert "extensions" not in fresh
        simulator.sim.state.add_fault("v3", "malformed")
        clock.now += 31  # past the TTL: a fresh read is due, and fails
        stale = await latest(client, cid)
        assert "errors" not in stale, stale
        assert stale["data"] == fresh["data"]
        assert stale["extensions"] == {"stale": [{"classifiedId": cid, "ageSeconds": 31}]}

        # Another agency never gets this agency's page, stale or not.
        other = await latest(client, cid, headers={"x-intermediary-id": "agency-2"})
        assert codes(other) == ["UPSTREAM_UNAVAILABLE"]
        assert "extensions" not in other

        clock.now += 300  # past TTL + stale window
        expired = await latest(client, cid)
        assert codes(expired) == ["UPSTREAM_UNAVAILABLE"]
        assert "extensions" not in expired
        metrics = (await client.get("/metrics")).text
        assert 'gateway_cache_events_total{event="stale_served"} 1.0' in metrics


async def test_no_stale_page_after_a_webhook_dropped_it(simulator: RunningSimulator) -> None:
    clock = FakeClock()
    cid, other_cid = simulator.sim.data.tenants["agency-1"][:2]
    async with gateway(simulator, clock) as client:
        await latest(client, cid)
        clock.now += 31  # the page is past its TTL, kept only as a stale copy
        await latest(client, other_cid)  # storing another page lets the expired one go
        delivered = await client.post(
            f"/webhooks/v3/{SECRET}/classifieds/{cid}/statuses",
            json={
                "portals": ["SL"],
                "status": "UPDATED",
                "message": "Classified updated",
                "statusDate": "2030-01-02T03:04:05.678Z",
            },
        )
        assert delivered.status_code == 201
        simulator.sim.state.add_fault("v3", "malformed")
        body = await latest(client, cid)
        assert codes(body) == ["UPSTREAM_UNAVAILABLE"]
        assert "extensions" not in body


async def test_grpc_answers_from_a_stale_page_say_so(simulator: RunningSimulator) -> None:
    clock = FakeClock()
    cid = simulator.sim.data.tenants["agency-1"][0]
    settings = settings_for(simulator, cache_ttl_s=30, cache_stale_s=300, grpc_port=0)
    app = create_app(settings, grpc=True, clock=clock)
    get = pb.GetListingRequest(ref=pb.ListingRef(classified_id=cid))
    get.read_mask.paths.append("classified.latest_status")
    page = pb.ListClassifiedStatusesRequest(classified_id=cid, page_size=2)
    async with (
        serve_app(app),
        grpc.aio.insecure_channel(app.state.grpc.address) as channel,
    ):
        stub = pb_grpc.ListingStatusServiceStub(channel)
        fresh, fresh_page = await stub.GetListing(get), await stub.ListClassifiedStatuses(page)
        assert not fresh.stale
        assert not fresh_page.stale
        simulator.sim.state.add_fault("v3", "malformed")
        clock.now += 31  # past the TTL: a fresh read is due, and fails
        stale, stale_page = await stub.GetListing(get), await stub.ListClassifiedStatuses(page)
    assert not stale.errors
    assert stale.classified.latest_status == fresh.classified.latest_status
    marker = pb.StaleSource(provider=pb.PROVIDER_CLASSIFIEDS_V3, age=Duration(seconds=31))
    assert list(stale.stale) == [marker]
    assert stale_page.statuses == fresh_page.statuses
    assert list(stale_page.stale) == [marker]
