"""Tenant isolation under concurrency: two agencies (oauth, X-Intermediary-Id) and two
passthrough tokens, interleaved over the same listings, each see exactly what they see
alone — through the page cache, the per-request loaders and the history reads; and a webhook
event reaches only the subscribers of the agency that owns its classified."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import websockets

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

# latestStatus and a statuses page of one classified: the whole history is read once and
# both are cut from it; state and portals read it as well.
QUERY = """
query($refs: [ListingRef!]!) {
  listings(refs: $refs) {
    classifiedId
    state
    portals { portal state }
    classified { latestStatus { id status date } statuses(first: 5) { nodes { id status } } }
  }
}
"""
ROUNDS = 12  # requests per tenant, all in flight together


def shared_refs(simulator: RunningSimulator) -> list[dict[str, Any]]:
    """Three listings of each agency, interleaved: every tenant asks for all six."""
    tenants = simulator.sim.data.tenants
    mixed = [
        cid
        for pair in zip(tenants["agency-1"][:3], tenants["agency-2"][:3], strict=True)
        for cid in pair
    ]
    return [{"classifiedId": cid} for cid in mixed]


def view(body: dict[str, Any]) -> tuple[Any, list[tuple[tuple[Any, ...], str]]]:
    """What a tenant saw: the data, and which paths failed with which code."""
    errors = sorted(
        (tuple(error["path"]), error["extensions"]["code"]) for error in body.get("errors", ())
    )
    return body["data"], errors


async def isolation_run(
    gateway: RunningGateway, tenants: dict[str, dict[str, str]], refs: list[dict[str, Any]]
) -> None:
    # What each tenant sees alone, one request at a time, on a cold cache...
    alone = {}
    for name, headers in tenants.items():
        alone[name] = view(await gateway.query(QUERY, {"refs": refs}, headers=headers))
    gateway.app.state.runtime.service.cache.clear()
    # ...is what it sees with every tenant's requests interleaved on one cold cache.
    order = [name for name in tenants for _ in range(ROUNDS)]
    random.Random(11).shuffle(order)
    bodies = await asyncio.gather(
        *(gateway.query(QUERY, {"refs": refs}, headers=tenants[name]) for name in order)
    )
    for name, body in zip(order, bodies, strict=True):
        assert view(body) == alone[name], name
    # Each tenant saw its own listings and none of the other's.
    seen = {
        name: {
            item["classifiedId"] for item in data["listings"] if item["classified"]["latestStatus"]
        }
        for name, (data, _) in alone.items()
    }
    assert all(seen.values())
    first, second = seen.values()
    assert not first & second


async def test_two_agencies_interleaved_never_see_each_others_data(
    simulator: RunningSimulator,
) -> None:
    tenants = {
        "agency-1": {"x-intermediary-id": "agency-1"},
        "agency-2": {"x-intermediary-id": "agency-2"},
    }
    async with run_gateway(simulator) as gateway:
        await isolation_run(gateway, tenants, shared_refs(simulator))


async def test_two_passthrough_tokens_interleaved_never_see_each_others_data(
    simulator: RunningSimulator,
) -> None:
    state = simulator.sim.state
    tenants = {
        "token-1": {"authorization": f"Bearer {state.issue_token('agency-1')}"},
        "token-2": {"authorization": f"Bearer {state.issue_token('agency-2')}"},
    }
    async with run_gateway(simulator, v3_auth="passthrough") as gateway:
        await isolation_run(gateway, tenants, shared_refs(simulator))


SUBSCRIPTION = "subscription { classifiedStatusChanged { classifiedId status { status message } } }"
WEBHOOK_SECRET = "isolation-secret-5e1a"


async def _subscriber(gateway: RunningGateway, agency: str) -> Any:
    socket = await websockets.connect(
        gateway.url.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],
        additional_headers={"X-Intermediary-Id": agency},
    )
    await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await socket.recv())["type"] == "connection_ack"
    await socket.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
    )
    return socket


async def test_subscribers_get_only_their_own_agencys_events(
    simulator: RunningSimulator,
) -> None:
    tenants = simulator.sim.data.tenants
    own = {"agency-1": tenants["agency-1"][1], "agency-2": tenants["agency-2"][1]}
    async with run_gateway(simulator, webhook_secret=WEBHOOK_SECRET) as gateway:
        bus = gateway.app.state.runtime.events
        sockets = {agency: await _subscriber(gateway, agency) for agency in own}
        await bus.membership.until(lambda: len(bus.subscribers) == len(sockets))
        # Each agency's classified changes, the other agency's first.
        for second, agency in enumerate(("agency-2", "agency-1")):
            delivery = {
                "portals": ["SL"],
                "status": "UPDATED",
                "message": f"{agency} private message",
                "statusDate": f"2030-01-02T03:04:0{second}Z",
            }
            response = await gateway.client.post(
                f"/webhooks/v3/{WEBHOOK_SECRET}/classifieds/{own[agency]}/statuses",
                json=delivery,
            )
            assert response.status_code == 201
        for agency, socket in sockets.items():
            event = json.loads(await socket.recv())["payload"]["data"]["classifiedStatusChanged"]
            assert event["classifiedId"] == own[agency], agency
            assert event["status"]["message"] == f"{agency} private message"
            await socket.close()
