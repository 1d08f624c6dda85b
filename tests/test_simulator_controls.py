"""Simulator controls: faults, latency, counters, request log, webhooks and the demo mover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.simulator import (
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    SIM_LEGACY_API_KEY,
    RunningSimulator,
    Simulator,
)

UA = "SimTest/1.0 aiohttp/3.11 linux/6.1"
USER = 12311


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def legacy_get(
    http: aiohttp.ClientSession, running: RunningSimulator
) -> aiohttp.ClientResponse:
    """GET one legacy ad; the body is read so the response can be inspected after release."""
    ad_id = running.sim.data.legacy_users[USER][0]
    url = f"{running.legacy_url}/status/{USER}/{ad_id}"
    async with http.get(url, headers={"Authentication": SIM_LEGACY_API_KEY}) as response:
        await response.read()
        return response


async def v3_get(
    http: aiohttp.ClientSession, running: RunningSimulator, tenant: str = "agency-1"
) -> aiohttp.ClientResponse:
    token = running.sim.state.issue_token(tenant)
    classified_id = running.sim.data.tenants[tenant][1]
    url = f"{running.v3_url}/classifieds/{classified_id}/statuses"
    headers = {"User-Agent": UA, "Authorization": f"Bearer {token}"}
    async with http.get(url, headers=headers) as response:
        await response.read()
        return response


# --- faults ---------------------------------------------------------------------------------


async def test_an_error_fault_fails_count_requests_then_stops(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("v3", "error", status=503, count=2)
    statuses = [(await v3_get(http, simulator)).status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert simulator.sim.state.faults == []


async def test_a_legacy_error_fault_answers_the_failure_envelope(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("legacy", "error", count=1)
    response = await legacy_get(http, simulator)
    body = await response.json()
    assert response.status == 500 and body["result"] is False and body["data"] == []


async def test_a_rate_limit_fault_answers_429_with_retry_after(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("v3", "rate_limit", count=1, retry_after=3)
    response = await v3_get(http, simulator)
    assert response.status == 429 and response.headers["Retry-After"] == "3"
    assert "message" in await response.json()
    simulator.sim.state.add_fault("legacy", "error", status=429, count=1)
    response = await legacy_get(http, simulator)
    assert response.status == 429 and response.headers["Retry-After"] == "1"


async def test_a_timeout_fault_hangs_past_a_client_deadline(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("legacy", "timeout", count=1, delay_s=0.5)
    url = f"{simulator.legacy_url}/status/{USER}/1"
    with pytest.raises(TimeoutError):
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=0.1)):
            pass
    simulator.sim.state.add_fault("legacy", "timeout", count=1, delay_s=0.3)
    started = time.perf_counter()
    response = await legacy_get(http, simulator)
    assert response.status == 200 and time.perf_counter() - started >= 0.3


async def test_a_malformed_fault_answers_200_with_broken_json(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("v3", "malformed", count=1)
    response = await v3_get(http, simulator)
    assert response.status == 200 and response.content_type == "application/json"
    with pytest.raises(ValueError):
        await response.json()


async def test_a_reset_fault_drops_the_connection(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("legacy", "reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        await legacy_get(http, simulator)
    simulator.sim.state.clear_faults()
    assert (await legacy_get(http, simulator)).status == 200


async def test_a_fault_on_one_endpoint_spares_the_others(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("legacy", "error", endpoint="status_post")
    assert (await legacy_get(http, simulator)).status == 200
    assert (await v3_get(http, simulator)).status == 200
    body = {"userId": USER, "adId": [1]}
    headers = {"Authentication": SIM_LEGACY_API_KEY}
    async with http.post(f"{simulator.legacy_url}/status/", json=body, headers=headers) as r:
        assert r.status == 500


async def test_a_token_fault_hits_the_token_endpoint(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.sim.state.add_fault("token", "error", count=1)
    body = {
        "client_id": SIM_CLIENT_ID,
        "client_secret": SIM_CLIENT_SECRET,
        "grant_type": "client_credentials",
        "audience": SIM_AUDIENCE,
        "intermediary_id": "agency-1",
    }
    async with http.post(simulator.token_url, json=body) as response:
        assert response.status == 500 and (await response.json())["error"] == "server_error"
    async with http.post(simulator.token_url, json=body) as response:
        assert response.status == 200


async def test_faults_can_be_managed_over_http(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    fault = {"upstream": "v3", "kind": "error", "status": 502, "count": 1, "endpoint": None}
    async with http.post(f"{simulator.control_url}/faults", json=fault) as response:
        assert response.status == 200
        assert (await response.json())["faults"][0]["status"] == 502
    assert (await v3_get(http, simulator)).status == 502
    for bad in (
        {"upstream": "v4", "kind": "error"},
        {"upstream": "v3", "kind": "flaky"},
        {"upstream": "v3", "kind": "error", "endpoint": "status_get"},
        {"upstream": "v3", "kind": "error", "count": 0},
        "error",
    ):
        async with http.post(f"{simulator.control_url}/faults", json=bad) as response:
            assert response.status == 400 and (await response.json())["error"]
    simulator.sim.state.add_fault("legacy", "error")
    async with http.delete(f"{simulator.control_url}/faults") as response:
        assert response.status == 200
    assert simulator.sim.state.faults == []


async def test_a_hanging_fault_does_not_hold_up_shutdown(http: aiohttp.ClientSession) -> None:
    # An hour-long hang: this test finishes only because stopping cuts it short.
    async with Simulator(seed=7).serve() as running:
        state = running.sim.state
        state.add_fault("legacy", "timeout", delay_s=3600)
        state.set_latency("v3", 3_600_000)
        both_arrived = asyncio.Event()
        record = state.record

        def recording(request: Any) -> None:
            record(request)
            if len(state.requests) == 2:
                both_arrived.set()

        state.record = recording  # type: ignore[method-assign]
        hung = [
            asyncio.ensure_future(legacy_get(http, running)),
            asyncio.ensure_future(v3_get(http, running)),
        ]
        await both_arrived.wait()
    for request in hung:
        request.cancel()
    await asyncio.gather(*hung, return_exceptions=True)
    assert running.sim.state.calls("legacy") == 1 and running.sim.state.calls("v3") == 1


# --- latency, counters, request log ---------------------------------------------------------


async def test_latency_delays_one_upstream_only(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    async with http.post(
        f"{simulator.control_url}/latency", json={"upstream": "legacy", "ms": 200}
    ) as response:
        assert response.status == 200
    started = time.perf_counter()
    await legacy_get(http, simulator)
    assert time.perf_counter() - started >= 0.2
    # While a legacy request waits out an hour of latency, V3 answers at once.
    simulator.sim.state.set_latency("legacy", 3_600_000)
    slow = asyncio.ensure_future(legacy_get(http, simulator))
    await v3_get(http, simulator)
    assert not slow.done()
    slow.cancel()
    await asyncio.gather(slow, return_exceptions=True)
    with pytest.raises(ValueError):
        simulator.sim.state.set_latency("ftp", 1)


async def test_counters_count_per_upstream_and_endpoint_and_reset(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    state = simulator.sim.state
    await legacy_get(http, simulator)
    await legacy_get(http, simulator)
    await v3_get(http, simulator)
    assert state.calls("legacy") == 2 and state.calls("legacy", "status_get") == 2
    assert state.calls("legacy", "status_post") == 0
    assert state.calls("v3", "classified_statuses") == 1 and state.calls("token") == 0
    async with http.get(f"{simulator.control_url}/counters") as response:
        counters = await response.json()
    assert counters["legacy"]["status_get"] == 2 and counters["v3"]["media_statuses"] == 0
    async with http.post(f"{simulator.control_url}/counters/reset") as response:
        assert response.status == 200
    assert state.calls("legacy") == 0 and len(state.requests) == 0


async def test_the_request_log_keeps_what_arrived(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    token = simulator.sim.state.issue_token("agency-1")
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    url = f"{simulator.v3_url}/classifieds/{classified_id}/statuses"
    params = [("status", "CREATED"), ("status", "UPDATED"), ("limit", "5")]
    headers = {"User-Agent": UA, "Authorization": f"Bearer {token}", "traceparent": "00-x"}
    async with http.get(url, params=params, headers=headers) as response:
        assert response.status == 200
    [recorded] = simulator.sim.state.requests
    assert (recorded.upstream, recorded.endpoint, recorded.method) == (
        "v3",
        "classified_statuses",
        "GET",
    )
    assert recorded.path == f"/v3/classifieds/{classified_id}/statuses"
    assert recorded.query == params
    assert recorded.headers["user-agent"] == UA and recorded.headers["TraceParent"] == "00-x"
    assert token not in repr(recorded)


# --- catalog and token revocation over HTTP -------------------------------------------------


async def test_the_catalog_lists_tenants_legacy_users_and_listings(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    async with http.get(f"{simulator.control_url}/catalog") as response:
        catalog = await response.json()
    data = simulator.sim.data
    assert [c["classifiedId"] for c in catalog["tenants"]["agency-1"]] == data.tenants["agency-1"]
    assert catalog["legacyUsers"][str(USER)] == data.legacy_users[USER]
    assert len(catalog["listings"]) == 30
    first = data.listings[0]
    assert catalog["listings"][0] == {
        "classifiedId": first.classified_id,
        "tenant": data.tenant_of(first.classified_id),
        "userId": first.user_id,
        "adId": first.ad_id,
    }
    assert SIM_CLIENT_SECRET not in str(catalog)


async def test_bulk_listings_are_new_copies_served_by_both_apis(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    url = f"{simulator.control_url}/listings"
    async with http.post(url, json={"count": 6, "users": 2}) as response:
        made = (await response.json())["listings"]
    async with http.post(url, json={"count": 1}) as response:
        (later,) = (await response.json())["listings"]
    ids = [m["classifiedId"] for m in made] + [later["classifiedId"]]
    assert len(set(ids)) == 7
    assert not set(ids) & set(simulator.sim.data.classifieds)
    assert len({m["userId"] for m in made}) == 2
    state = simulator.sim.state
    for entry in made:
        record = state.classified(entry["classifiedId"])
        assert record is not None and record.tenant == "agency-1"
        assert 1 <= len(record.statuses) <= 100  # one page at limit=100
        assert state.legacy_ad(entry["userId"], entry["adId"]) is not None
    token = state.issue_token("agency-1")
    headers = {"User-Agent": UA, "Authorization": f"Bearer {token}"}
    statuses = f"{simulator.v3_url}/classifieds/{made[0]['classifiedId']}/statuses?limit=100"
    async with http.get(statuses, headers=headers) as response:
        page = await response.json()
    assert page["items"] and "nextToken" not in page
    body = {"userId": made[0]["userId"], "adId": [m["adId"] for m in made[::2]]}
    legacy = {"Authentication": SIM_LEGACY_API_KEY}
    async with http.post(f"{simulator.legacy_url}/status/", json=body, headers=legacy) as response:
        answer = await response.json()
    assert [ad["adId"] for ad in answer["data"]] == body["adId"]
    async with http.post(url, json={"count": 2, "users": 3}) as response:
        assert response.status == 400
    async with http.post(url, json={"count": 2, "tenant": "agency-9"}) as response:
        assert response.status == 404


async def test_revoking_over_http_invalidates_tokens(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    token = simulator.sim.state.issue_token("agency-1")
    async with http.post(f"{simulator.control_url}/tokens/revoke") as response:
        assert response.status == 200
    assert simulator.sim.state.grant_for(token) is None


# --- webhook delivery -----------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TestServer, list[tuple[str, Any]]]]:
    """A webhook subscriber on loopback: records each callback and answers 201."""
    received: list[tuple[str, Any]] = []

    async def callback(request: web.Request) -> web.Response:
        received.append((request.path, await request.json()))
        status = 500 if "broken" in request.path else 201
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", callback)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server, received


async def subscribe(
    http: aiohttp.ClientSession, running: RunningSimulator, tenant: str, body: dict[str, Any]
) -> None:
    token = running.sim.state.issue_token(tenant)
    headers = {"User-Agent": UA, "Authorization": f"Bearer {token}"}
    async with http.put(f"{running.v3_url}/webhooks", json=body, headers=headers) as response:
        assert response.status == 200


async def test_appended_statuses_are_posted_to_the_owning_tenants_webhook(
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
    receiver: tuple[TestServer, list[tuple[str, Any]]],
) -> None:
    server, received = receiver
    base = str(server.make_url("/hooks/secret"))
    await subscribe(http, simulator, "agency-1", {"url": base, "statuses": ["UPDATED"]})
    await subscribe(http, simulator, "agency-2", {"url": base + "-2"})
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    item = {
        "portals": ["SL"],
        "status": "UPDATED",
        "message": "done",
        "statusDate": "2030-01-01T00:00:00.000Z",
    }
    [result] = await simulator.sim.state.append_status(classified_id, item)
    assert result.accepted and result.status == 201
    assert result.url == f"{base}/classifieds/{classified_id}/statuses"
    assert received == [(f"/hooks/secret/classifieds/{classified_id}/statuses", item)]
    filtered = {**item, "status": "UPDATING", "statusDate": "2030-01-01T00:00:01.000Z"}
    assert await simulator.sim.state.append_status(classified_id, filtered) == []
    assert len(received) == 1


async def test_delivery_records_refusals_and_unreachable_subscribers(
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
    receiver: tuple[TestServer, list[tuple[str, Any]]],
) -> None:
    server, _ = receiver
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    await subscribe(http, simulator, "agency-1", {"url": str(server.make_url("/broken"))})
    [refused] = await simulator.sim.state.append_status(classified_id, {"status": "UPDATED"})
    assert refused.status == 500 and not refused.accepted
    await subscribe(http, simulator, "agency-1", {"url": "http://127.0.0.1:9/closed"})
    [lost] = await simulator.sim.state.append_status(classified_id, {"status": "UPDATED"})
    assert lost.status is None and lost.error


async def test_the_control_route_completes_and_appends_a_status(
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
    receiver: tuple[TestServer, list[tuple[str, Any]]],
) -> None:
    server, received = receiver
    await subscribe(http, simulator, "agency-1", {"url": str(server.make_url("/h"))})
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    url = f"{simulator.control_url}/classifieds/{classified_id}/statuses"
    async with http.post(url, json={"status": "RECEIVING", "verb": "DELETE"}) as response:
        answer = await response.json()
    item = answer["item"]
    assert item["subStatus"] == "RECEIVING_DELETE" and item["portals"] and item["message"]
    assert answer["deliveries"][0]["status"] == 201
    assert answer["deliveries"][0]["url"] == str(server.make_url("/")) + "…"
    assert received[0][1] == item
    record = simulator.sim.state.classified(classified_id)
    assert record is not None and record.latest() is not None
    assert record.latest().item == item  # type: ignore[union-attr]
    async with http.post(f"{simulator.control_url}/classifieds/nope/statuses", json={}) as r:
        assert r.status == 404


# --- demo mover -----------------------------------------------------------------------------


async def test_the_mover_advances_listings_on_both_sides() -> None:
    sim = Simulator(seed=7, move_every_s=5)
    # The mover's sleep is replaced: each wait is reported, and ends when the test says so.
    waits: asyncio.Queue[float] = asyncio.Queue()
    go = asyncio.Semaphore(0)

    async def sleep(seconds: float) -> None:
        waits.put_nowait(seconds)
        await go.acquire()

    sim.mover.sleep = sleep
    before_v3 = {c: len(sim.data.classifieds[c].statuses) for c, _, _ in sim.data.listings}
    before_legacy = {(u, a): sim.data.legacy_ads[u][a] for _, u, a in sim.data.listings}
    async with sim.serve():
        assert await waits.get() == 5
        assert sim.mover.ticks == 0  # nothing moves before the first wait is over
        for _ in range(3):
            go.release()
            assert await waits.get() == 5  # the tick is done: the mover waits again
    assert sim.mover.ticks == 3
    grown = [c for c, n in before_v3.items() if len(sim.state.classified(c).statuses) > n]  # type: ignore[union-attr]
    moved = [k for k, ad in before_legacy.items() if sim.state.legacy_ad(*k) != ad]
    assert grown and moved
    for classified_id in grown:
        record = sim.state.classified(classified_id)
        assert record is not None
        newest = record.latest()
        assert newest is not None and newest is record.statuses[-1]


async def test_a_mover_tick_delivers_webhooks(
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
    receiver: tuple[TestServer, list[tuple[str, Any]]],
) -> None:
    server, received = receiver
    for tenant in simulator.sim.data.tenants:
        await subscribe(http, simulator, tenant, {"url": str(server.make_url("/m"))})
    results = await simulator.sim.mover.tick()
    assert len(results) == simulator.sim.mover.batch
    assert all(r.accepted for r in results) and len(received) == len(results)
