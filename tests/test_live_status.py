"""Live status end to end: V3 webhooks in, cache dropped, GraphQL subscriptions out.

Everything runs over real sockets: the simulator posts its callbacks to the gateway's
receiver, and subscribers are aiohttp WebSocket clients speaking both GraphQL protocols.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import httpx
import pytest

from gateway.config import SettingsError
from gateway.domain.models import ClassifiedStatusCode, ClassifiedStatusEvent, ClassifiedStatusItem
from gateway.live.bus import LocalEventBus
from gateway.simulator import RunningSimulator

from gateway_harness import LOOPBACK_TLS, RunningGateway, run_gateway, settings_for

SECRET = "webhook-secret-0123456789"
TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"

SUBSCRIBE = """
mutation($statuses: [ClassifiedStatusCode!], $url: String) {
  subscribeStatusWebhook(statuses: $statuses, url: $url) { url statuses receiver }
}"""
UNSUBSCRIBE = "mutation { unsubscribeStatusWebhook }"
WATCH = """
subscription($ids: [ID!]) {
  classifiedStatusChanged(classifiedIds: $ids) {
    classifiedId
    receivedAt
    status { id status subStatus portals date }
    listing { classifiedId state portals { portal state } classified { latestStatus { status } } }
  }
}"""
LATEST = """
query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { id status } } } }"""


@pytest.fixture
async def live(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    """The gateway, reachable by the simulator at its own GATEWAY_PUBLIC_URL."""
    async with run_gateway(simulator, public=True, webhook_secret=SECRET) as running:
        yield running


def bus_of(gateway: RunningGateway) -> LocalEventBus:
    bus = gateway.app.state.runtime.events
    assert isinstance(bus, LocalEventBus)
    return bus


# Only a hang reaches it: it fails the test with its condition instead of waiting for the
# suite's timeout, which would say nothing of where the test stood.
UNTIL_SAFETY_S = 60


async def until(condition: Any) -> None:
    """Yield to the loop until `condition()` holds (the gateway serves in this loop).

    Neither WebSocket protocol acknowledges a subscription: the bus is the only witness.
    """
    try:
        async with asyncio.timeout(UNTIL_SAFETY_S):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        try:
            what = inspect.getsource(condition).strip()
        except (OSError, TypeError):
            what = repr(condition)
        raise AssertionError(f"never came true: {what}") from None


def tenant_classifieds(gateway: RunningGateway, tenant: str = "agency-1") -> list[str]:
    return gateway.sim.data.tenants[tenant]


async def append(gateway: RunningGateway, classified_id: str, status: str) -> dict[str, Any]:
    """Append a status upstream through the simulator's control route (fires webhooks)."""
    async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
        response = await client.post(
            f"{gateway.running_sim.control_url}/classifieds/{classified_id}/statuses",
            json={"status": status},
        )
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


class Subscriber:
    """A GraphQL-over-WebSocket client of either protocol, on a real socket."""

    _ids = itertools.count(1)

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol

    async def start(self, query: str, variables: dict[str, Any] | None = None) -> str:
        op = str(next(self._ids))
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload = {"query": query, "variables": variables or {}}
        await self.ws.send_json({"id": op, "type": kind, "payload": payload})
        return op

    async def next(self) -> dict[str, Any]:
        """The payload of the next result message."""
        while True:
            message = await self.ws.receive_json()
            if message["type"] in ("next", "data"):
                payload: dict[str, Any] = message["payload"]
                return payload
            if message["type"] in ("error", "complete"):
                raise AssertionError(f"subscription ended: {message}")


@asynccontextmanager
async def connect(gateway: RunningGateway, protocol: str) -> AsyncIterator[Subscriber]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{gateway.url}/graphql", protocols=(protocol,)) as ws,
    ):
        assert ws.protocol == protocol
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json())["type"] == "connection_ack"
        yield Subscriber(ws, protocol)


def status_body(classified_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "portals": ["SL"],
        "status": "UPDATED",
        "message": "Classified updated",
        "statusDate": "2030-01-02T03:04:05.678Z",
    }
    if classified_id is not None:
        body["classifiedId"] = classified_id
    return body | fields


# --- the subscription at V3 -------------------------------------------------------------


async def test_the_mutation_registers_the_receiver_for_the_callers_agency(
    live: RunningGateway,
) -> None:
    body = await live.query(
        SUBSCRIBE, {"statuses": ["CREATED", "UPDATED"]}, headers={"x-intermediary-id": "agency-2"}
    )
    assert "errors" not in body, body
    answer = body["data"]["subscribeStatusWebhook"]
    assert answer == {
        "url": f"{live.url}/webhooks/v3/***",
        "statuses": ["CREATED", "UPDATED"],
        "receiver": True,
    }
    assert SECRET not in json.dumps(body)
    (registered,) = live.sim.state.subscriptions
    assert registered.intermediary_id == "agency-2"
    assert registered.url == f"{live.url}/webhooks/v3/{SECRET}"
    assert registered.statuses == ("CREATED", "UPDATED")

    body = await live.query(UNSUBSCRIBE, headers={"x-intermediary-id": "agency-2"})
    assert body == {"data": {"unsubscribeStatusWebhook": True}}
    assert live.sim.state.subscriptions == []
    assert live.calls("v3", "webhooks_put") == live.calls("v3", "webhooks_delete") == 1


async def test_another_url_is_registered_as_given(live: RunningGateway) -> None:
    body = await live.query(SUBSCRIBE, {"url": "https://hooks.example.test/v3"})
    assert body["data"]["subscribeStatusWebhook"] == {
        "url": "https://hooks.example.test/v3",
        "statuses": None,
        "receiver": False,
    }
    assert [s.url for s in live.sim.state.subscriptions] == ["https://hooks.example.test/v3"]


async def test_without_a_public_url_or_a_url_the_mutations_are_bad_input(
    gateway: RunningGateway,
) -> None:
    for mutation in (SUBSCRIBE, UNSUBSCRIBE):
        body = await gateway.query(mutation)
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = await gateway.query(SUBSCRIBE, {"url": "not a url"})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    body = await gateway.query(SUBSCRIBE, {"url": "http://127.0.0.1:1/x", "statuses": []})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert gateway.calls("v3") == 0


async def test_a_setting_subscribes_at_start_and_unsubscribes_at_shutdown(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(
        simulator, public=True, webhook_secret=SECRET, webhook_subscribe=True
    ) as running:
        (registered,) = simulator.sim.state.subscriptions
        assert registered.intermediary_id == "agency-1"
        assert registered.url == f"{running.url}/webhooks/v3/{SECRET}"
    assert simulator.sim.state.subscriptions == []


# --- events out ---------------------------------------------------------------------------


async def test_an_upstream_event_reaches_subscribers_of_both_protocols_filtered_by_id(
    live: RunningGateway,
) -> None:
    watched, other = tenant_classifieds(live)[1:3]
    assert "errors" not in await live.query(SUBSCRIBE)
    async with connect(live, TRANSPORT_WS) as modern, connect(live, LEGACY_WS) as legacy:
        await modern.start(WATCH, {"ids": [watched]})
        await legacy.start(WATCH, {"ids": [watched]})
        async with connect(live, TRANSPORT_WS) as everything:
            await everything.start(WATCH)
            await bus_of(live).membership.until(lambda: len(bus_of(live).subscribers) == 3)

            unwatched = await append(live, other, "UPDATING")
            appended = await append(live, watched, "UPDATED")
            for answer in (unwatched, appended):
                assert [d["status"] for d in answer["deliveries"]] == [201]

            assert (await everything.next())["data"]["classifiedStatusChanged"][
                "classifiedId"
            ] == other
            for subscriber in (modern, legacy, everything):
                event = (await subscriber.next())["data"]["classifiedStatusChanged"]
                # The unwatched classified's event came first: had the filter let it
                # through, the two filtered subscribers would have seen it here.
                assert event["classifiedId"] == watched
                assert event["status"]["status"] == "UPDATED"
                assert event["status"]["date"].startswith(appended["item"]["statusDate"][:19])
                assert datetime.fromisoformat(event["receivedAt"]).tzinfo is not None
                listing = event["listing"]
                assert listing["classifiedId"] == watched
                assert listing["classified"]["latestStatus"]["status"] == "UPDATED"
                assert listing["state"] == "ONLINE"
                assert {p["state"] for p in listing["portals"]} == {"ONLINE"}


async def test_the_next_query_shows_the_new_status_without_waiting_for_the_ttl(
    live: RunningGateway,
) -> None:
    classified_id = tenant_classifieds(live)[1]
    assert "errors" not in await live.query(SUBSCRIBE)
    before = await live.query(LATEST, {"id": classified_id})
    assert before == await live.query(LATEST, {"id": classified_id})  # now cached
    reads = live.calls("v3", "classified_statuses")
    latest = before["data"]["listing"]["classified"]["latestStatus"]["status"]
    new_status = "DELETING" if latest != "DELETING" else "DELETED"

    await append(live, classified_id, new_status)
    after = await live.query(LATEST, {"id": classified_id})
    assert after["data"]["listing"]["classified"]["latestStatus"]["status"] == new_status
    assert live.calls("v3", "classified_statuses") == reads + 1


# --- the receiver ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_each_query_over_a_websocket_reads_for_itself(
    live: RunningGateway, protocol: str
) -> None:
    """A socket's operations shared one request scope for the socket's life: a query was
    answered from the history an earlier query on the socket had read, even after V3's
    webhook had dropped it, while HTTP showed the news."""
    assert "errors" not in await live.query(SUBSCRIBE)
    classified_id = tenant_classifieds(live)[1]
    query = (
        "query($id: ID!) { listing(ref: {classifiedId: $id}) "
        "{ state classified { latestStatus { status } } } }"
    )

    async def answer(subscriber: Subscriber) -> dict[str, Any]:
        op = await subscriber.start(query, {"id": classified_id})
        while True:
            message = await subscriber.ws.receive_json()
            if message.get("id") == op and message["type"] in ("next", "data"):
                payload: dict[str, Any] = message["payload"]
                return payload

    async with connect(live, protocol) as subscriber:
        before = await answer(subscriber)
        await append(live, classified_id, "DELETED")  # the webhook has been handled
        over_http = await live.query(query, {"id": classified_id})
        after = await answer(subscriber)
    assert before["data"]["listing"]["classified"]["latestStatus"]["status"] != "DELETED"
    assert over_http["data"]["listing"]["classified"]["latestStatus"]["status"] == "DELETED"
    assert after == over_http


async def test_the_receiver_refuses_bad_deliveries_without_calling_upstream(
    live: RunningGateway,
) -> None:
    classified_id = tenant_classifieds(live)[1]
    base = f"/webhooks/v3/{SECRET}/classifieds/{classified_id}/statuses"
    live.sim.state.reset_counters()
    post = live.client.post
    async with bus_of(live).subscribe() as events:
        wrong_secret = await post(base.replace(SECRET, SECRET[:-1] + "x"), json=status_body())
        unknown_path = await post("/webhooks/v3/nothing-here", json=status_body())
        assert wrong_secret.status_code == unknown_path.status_code == 404
        assert wrong_secret.text == unknown_path.text

        malformed = await post(base, content=b'{"status": ', headers=JSON)
        not_a_status = await post(base, json={"status": "UPDATED"})
        not_an_object = await post(base, json=["UPDATED"])
        before_year_1 = await post(base, json=status_body(statusDate="0001-01-01T00:00:00+14:00"))
        for response in (malformed, not_a_status, not_an_object, before_year_1):
            assert response.status_code == 400, response.text
            assert response.json()["error"]
        oversized = await post(base, json=status_body(message="x" * 70_000))
        assert oversized.status_code == 413

        first = await post(base, json=status_body(classified_id))
        again = await post(base, json=status_body(classified_id))
        with_id = status_body(statusId="status-1", statusDate="2030-01-02T03:04:06Z")
        by_id = [await post(base, json=with_id), await post(base, json=with_id)]
        assert [r.status_code for r in (first, again, *by_id)] == [201] * 4
        assert [r.json()["duplicate"] for r in (first, again, *by_id)] == [False, True] * 2
        # Not refused, so not lost: a status whatever its content type, and one whose body
        # names another classified (the path's counts).
        as_text = status_body(statusDate="2030-01-02T03:04:07Z")
        untyped = await post(base, content=json.dumps(as_text), headers=TEXT)
        other = status_body("another-classified", statusDate="2030-01-02T03:04:08Z")
        mismatched = await post(base, json=other)
        assert [untyped.status_code, mismatched.status_code] == [201, 201]

        received = [await anext(aiter(events)) for _ in range(4)]
        assert [e.status.status_date.second for e in received] == [5, 6, 7, 8]
        assert {e.classified_id for e in received} == {classified_id}
        (subscriber,) = bus_of(live).subscribers
        assert len(subscriber) == 0  # the duplicates were not published
        metrics = (await live.client.get("/metrics")).text
        assert 'gateway_webhook_callbacks_total{outcome="published"} 4.0' in metrics
        assert 'gateway_webhook_callbacks_total{outcome="duplicate"} 2.0' in metrics
        assert 'gateway_events_total{event="published"} 4.0' in metrics
        assert "gateway_event_subscribers 1.0" in metrics
    assert sum(n for calls in live.sim.state.counters().values() for n in calls.values()) == 0


JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}


# --- bounded queues and clean disconnects -------------------------------------------------


def event(classified_id: str, n: int) -> ClassifiedStatusEvent:
    item = ClassifiedStatusItem(
        status=ClassifiedStatusCode.UPDATED,
        raw_status="UPDATED",
        message=f"event {n}",
        status_date=datetime(2030, 1, 1, tzinfo=UTC),
    )
    return ClassifiedStatusEvent(classified_id, item, datetime.now(UTC))


async def test_a_subscriber_that_never_reads_keeps_a_bounded_queue(
    simulator: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        run_gateway(simulator, event_queue_size=16) as gateway,
        connect(gateway, TRANSPORT_WS) as stuck,
    ):
        await stuck.start("subscription { classifiedStatusChanged { status { message } } }")
        bus = bus_of(gateway)
        await bus.membership.until(lambda: len(bus.subscribers) == 1)
        (queue,) = bus.subscribers
        # Events reach only subscribers whose agency owns the classified: use one of ours.
        mine = tenant_classifieds(gateway)[1]
        with caplog.at_level(logging.WARNING, logger="gateway.live.bus"):
            # A burst of callbacks arrives while the subscriber reads nothing.
            for n in range(1000):
                bus.publish(event(mine, n))
        assert len(queue) == 16
        assert queue.dropped == bus.stats.dropped == 1000 - 16
        assert sum("not keeping up" in r.message for r in caplog.records) == 1
        metrics = (await gateway.client.get("/metrics")).text
        assert 'gateway_events_total{event="dropped"} 984.0' in metrics
        # What it reads once it wakes up are the newest events, oldest first.
        messages = [
            (await stuck.next())["data"]["classifiedStatusChanged"]["status"]["message"]
            for _ in range(16)
        ]
        assert messages == [f"event {n}" for n in range(984, 1000)]


async def test_a_client_that_disconnects_mid_stream_leaves_no_task_behind(
    live: RunningGateway,
) -> None:
    bus = bus_of(live)
    mine = tenant_classifieds(live)[1]
    # Whether the subscriber may see `mine` is asked of V3 once; warm that page (and the
    # simulator's keep-alive connection) first, so only the sockets' own tasks are counted.
    warm = await live.query(LATEST, {"id": mine})
    assert "errors" not in warm, warm
    before = asyncio.all_tasks()
    for protocol in (TRANSPORT_WS, LEGACY_WS):
        async with connect(live, protocol) as subscriber:
            await subscriber.start("subscription { classifiedStatusChanged { classifiedId } }")
            await bus.membership.until(lambda: len(bus.subscribers) == 1)
            bus.publish(event(mine, 1))
            assert (await subscriber.next())["data"]["classifiedStatusChanged"] == {
                "classifiedId": mine
            }
            for n in range(5):
                bus.publish(event(mine, n))  # still streaming while the socket closes
        await bus.membership.until(lambda: not bus.subscribers)
    # Every task the two connections started has ended: the handlers, the operations.
    for _ in range(200):
        left = {t for t in asyncio.all_tasks() - before if not t.done()}
        left.discard(asyncio.current_task())  # type: ignore[arg-type]
        if not left:
            break
        await asyncio.sleep(0.01)
    assert not left, [t.get_coro() for t in left]


async def test_a_mover_tick_arrives_as_events(live: RunningGateway) -> None:
    assert "errors" not in await live.query(SUBSCRIBE)
    async with connect(live, TRANSPORT_WS) as subscriber:
        await subscriber.start("subscription { classifiedStatusChanged { classifiedId } }")
        await bus_of(live).membership.until(lambda: len(bus_of(live).subscribers) == 1)
        mine = set(tenant_classifieds(live))
        async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
            deliveries: list[dict[str, Any]] = []
            while not deliveries:  # a tick may move only other agencies' listings
                moved = await client.post(f"{live.running_sim.control_url}/move")
                deliveries = moved.json()["deliveries"]
        assert {d["status"] for d in deliveries} == {201}
        for delivery in deliveries:
            event = (await subscriber.next())["data"]["classifiedStatusChanged"]
            assert event["classifiedId"] == delivery["classifiedId"]
            assert event["classifiedId"] in mine


def test_subscribing_at_start_needs_a_public_url(simulator: RunningSimulator) -> None:
    with pytest.raises(SettingsError, match=r"^GATEWAY_PUBLIC_URL is required"):
        settings_for(simulator, webhook_subscribe=True)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_an_empty_id_filter_is_refused_with_a_code(
    live: RunningGateway, protocol: str
) -> None:
    async with connect(live, protocol) as subscriber:
        await subscriber.start(WATCH, {"ids": []})
        message = await subscriber.ws.receive_json()
    (error,) = message["payload"]["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert not bus_of(live).subscribers
