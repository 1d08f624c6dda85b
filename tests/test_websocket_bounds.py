"""GraphQL over WebSocket gets the bounds HTTP has (gateway.graphql.websocket): an init
deadline on both protocols.

Real servers on loopback, real WebSocket clients (aiohttp). Deadlines are settings, set
small here; a close the server should make is awaited with a generous safety net only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import pytest

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]
# Long enough for any machine to close a socket it should close; only a hang reaches it.
SAFETY_S = 30
EMPTY_WATCH = "subscription { classifiedStatusChanged(classifiedIds: []) { classifiedId } }"
WATCH_EMPTY = EMPTY_WATCH
LATEST = "query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { status } } } }"


@asynccontextmanager
async def socket(
    gateway: RunningGateway, protocol: str
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{gateway.url}/graphql", protocols=(protocol,)) as ws,
    ):
        assert ws.protocol == protocol
        yield ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """The close code and reason the server ends `ws` with (text messages before it skipped)."""
    async with asyncio.timeout(SAFETY_S):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                return ws.close_code, str(message.extra or "")
            assert message.type is aiohttp.WSMsgType.TEXT, message


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_that_never_sends_connection_init_is_closed_4408(
    simulator: RunningSimulator, protocol: str
) -> None:
    """graphql-ws sockets used to stay open for ever, graphql-transport-ws ones for 60 s."""
    async with run_gateway(simulator, ws_init_timeout_s=0.2) as gateway:
        async with socket(gateway, protocol) as ws:
            code, reason = await closed_with(ws)
        assert code == 4408
        assert reason == "Connection initialisation timeout"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_initialised_socket_outlives_the_init_deadline(
    simulator: RunningSimulator, protocol: str
) -> None:
    async with (
        run_gateway(simulator, ws_init_timeout_s=0.2) as gateway,
        socket(gateway, protocol) as ws,
    ):
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json(timeout=SAFETY_S))["type"] == "connection_ack"
        await asyncio.sleep(0.4)  # twice the init deadline
        # Still served: an operation refused for its argument is answered.
        start = "subscribe" if protocol == TRANSPORT_WS else "start"
        await ws.send_json({"id": "1", "type": start, "payload": {"query": EMPTY_WATCH}})
        answer = await ws.receive_json(timeout=SAFETY_S)
        assert answer["id"] == "1"
        assert answer["type"] in ("next", "data", "error"), answer
        assert not ws.closed


# --- messages ---------------------------------------------------------------------------------


async def initialised(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert (await ws.receive_json(timeout=SAFETY_S))["type"] == "connection_ack"


def start(protocol: str, query: str, op: str = "1", **payload: Any) -> dict[str, Any]:
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    return {"id": op, "type": kind, "payload": {"query": query, **payload}}


async def answer_to(ws: aiohttp.ClientWebSocketResponse, op: str = "1") -> dict[str, Any]:
    """The first `next`/`data`/`error` message of operation `op`."""
    async with asyncio.timeout(SAFETY_S):
        while True:
            message = await ws.receive_json()
            if message.get("id") == op and message["type"] in ("next", "data", "error"):
                return cast(dict[str, Any], message)
            assert (message.get("id"), message["type"]) != (op, "complete"), (
                f"ended without an answer: {message}"
            )


def error_codes(message: dict[str, Any]) -> set[str]:
    payload = message["payload"]
    if message["type"] == "error":
        errors = payload if isinstance(payload, list) else [payload]
    else:
        errors = payload.get("errors") or []
    return {error["extensions"]["code"] for error in errors}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[1]", id="a-list"),
        pytest.param("3", id="a-number"),
        pytest.param('"connection_init"', id="a-string"),
        pytest.param('{"payload": {}}', id="no-type"),
        pytest.param('{"type": 5}', id="type-not-a-string"),
        pytest.param('{"type": "connection_init", "payload": "x"}', id="payload-not-an-object"),
        pytest.param('{"type": "nope"}', id="unknown-type"),
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_malformed_message_closes_4400_without_a_traceback(
    simulator: RunningSimulator, protocol: str, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Non-JSON text or JSON of the wrong shape used to drop the TCP connection without a
    close frame and log "Exception in ASGI application" (graphql-ws ignored non-JSON)."""
    caplog.set_level(logging.INFO)
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)  # uvicorn's loggers do not reach the root
    try:
        async with run_gateway(simulator) as gateway, socket(gateway, protocol) as ws:
            await ws.send_str(raw)
            code, reason = await closed_with(ws)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert code == 4400
    assert reason
    assert not [r for r in caplog.records if r.exc_info or "Exception" in r.getMessage()]


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"payload": {"query": "{ __typename }"}}, id="no-id"),
        pytest.param({"id": 1, "payload": {"query": "{ __typename }"}}, id="id-a-number"),
        pytest.param({"id": "1", "payload": "{ __typename }"}, id="payload-a-string"),
        pytest.param({"id": "1", "payload": {"query": 5}}, id="query-not-a-string"),
        pytest.param(
            {"id": "1", "payload": {"query": "{ __typename }", "variables": [1]}},
            id="variables-a-list",
        ),
        pytest.param(
            {"id": "1", "payload": {"query": "{ __typename }", "operationName": {}}},
            id="operation-name-an-object",
        ),
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_operation_message_of_the_wrong_shape_closes_4400(
    simulator: RunningSimulator, protocol: str, message: dict[str, Any]
) -> None:
    kind = "subscribe" if protocol == TRANSPORT_WS else "start"
    async with run_gateway(simulator) as gateway, socket(gateway, protocol) as ws:
        await initialised(ws)
        await ws.send_json({"type": kind, **message})
        code, reason = await closed_with(ws)
    assert code == 4400, reason


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_binary_message_closes_4400(simulator: RunningSimulator, protocol: str) -> None:
    async with run_gateway(simulator) as gateway, socket(gateway, protocol) as ws:
        await ws.send_bytes(b'{"type": "connection_init"}')
        code, reason = await closed_with(ws)
    assert (code, reason) == (4400, "WebSocket message type must be text")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_document_that_does_not_parse_gets_an_error_message(
    simulator: RunningSimulator, protocol: str
) -> None:
    """graphql-transport-ws used to answer a bare `complete`, graphql-ws nothing."""
    async with run_gateway(simulator) as gateway, socket(gateway, protocol) as ws:
        await initialised(ws)
        await ws.send_json(start(protocol, "subscription { classifiedStatusChanged("))
        answer = await answer_to(ws)
        assert answer["type"] == "error"
        assert error_codes(answer) == {"GRAPHQL_PARSE_FAILED"}
        assert not ws.closed


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_message_larger_than_a_request_body_closes_1009(
    simulator: RunningSimulator, protocol: str
) -> None:
    """WebSocket messages could be 16 MB while HTTP bodies were held to GATEWAY_MAX_BODY_BYTES."""
    async with run_gateway(simulator, max_body_bytes=4096) as gateway:
        async with socket(gateway, protocol) as ws:
            await initialised(ws)
            padding = "#" + "x" * 5000 + "\n"
            await ws.send_json(start(protocol, padding + "subscription { __typename }"))
            code, _ = await closed_with(ws)
        assert code == 1009
        async with socket(gateway, protocol) as ws:  # within the limit: served
            await initialised(ws)
            await ws.send_json(start(protocol, "#" + "x" * 3000 + "\n" + WATCH_EMPTY))
            assert (await answer_to(ws))["type"] in ("next", "data", "error")


# --- graphql-ws, where graphql-transport-ws says what to do ------------------------------------


async def test_graphql_ws_refuses_a_second_connection_init_4429(
    simulator: RunningSimulator,
) -> None:
    """It used to acknowledge it again."""
    async with run_gateway(simulator) as gateway, socket(gateway, LEGACY_WS) as ws:
        await initialised(ws)
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert await closed_with(ws) == (4429, "Too many initialisation requests")


async def test_graphql_ws_refuses_an_id_in_use_4409(simulator: RunningSimulator) -> None:
    """It used to stop the running operation and start the new one under the same id."""
    watch = 'subscription { classifiedStatusChanged(classifiedIds: ["c-1"]) { classifiedId } }'
    async with run_gateway(simulator) as gateway, socket(gateway, LEGACY_WS) as ws:
        await initialised(ws)
        await ws.send_json(start(LEGACY_WS, watch, op="a"))
        await ws.send_json(start(LEGACY_WS, watch, op="a"))
        code, reason = await closed_with(ws)
    assert (code, reason) == (4409, "Subscriber for a already exists")


# --- the limits HTTP applies ------------------------------------------------------------------


class HeldV3:
    """The real V3 client, every status read held until `gate` opens; `arrived` is set once
    one is held."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def classified_statuses(self, *args: Any, **kwargs: Any) -> Any:
        self.arrived.set()
        await self.gate.wait()
        return await self.real.classified_statuses(*args, **kwargs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_websocket_operations_take_admission_turns(
    simulator: RunningSimulator, protocol: str
) -> None:
    """With the one turn taken by an HTTP request, a WebSocket operation is refused with
    OVERLOADED and the socket stays up; WebSocket operations used to run past admission."""
    classified_id = simulator.sim.data.listings[0].classified_id
    async with run_gateway(
        simulator, max_concurrent_requests=1, min_concurrent_requests=1, max_queued_requests=0
    ) as gateway:
        service = gateway.app.state.runtime.service
        held = HeldV3(service.v3)
        service.v3 = held
        http = asyncio.ensure_future(
            gateway.query(LATEST, {"id": classified_id}),
        )
        try:
            await held.arrived.wait()
            async with socket(gateway, protocol) as ws:
                await initialised(ws)
                query = EMPTY_WATCH if protocol == LEGACY_WS else "{ __typename }"
                await ws.send_json(start(protocol, query))
                answer = await answer_to(ws)
                assert answer["type"] == "error", answer
                assert error_codes(answer) == {"OVERLOADED"}
                [error] = answer["payload"] if protocol == TRANSPORT_WS else [answer["payload"]]
                assert error["extensions"]["retryAfter"] >= 1
                held.gate.set()
                assert "errors" not in await http
                # The turn is free again: the same operation is served.
                await ws.send_json(start(protocol, query, op="2"))
                assert error_codes(await answer_to(ws, "2")) <= {"BAD_USER_INPUT"}
        finally:
            held.gate.set()
            await http
        assert gateway.app.state.admission.running == 0


async def test_a_waiting_subscription_holds_no_admission_turn(simulator: RunningSimulator) -> None:
    watch = 'subscription { classifiedStatusChanged(classifiedIds: ["c-1"]) { classifiedId } }'
    async with (
        run_gateway(
            simulator, max_concurrent_requests=1, min_concurrent_requests=1, max_queued_requests=0
        ) as gateway,
        socket(gateway, TRANSPORT_WS) as ws,
    ):
        await initialised(ws)
        bus = gateway.app.state.runtime.events
        for count, op in enumerate(("a", "b", "c"), start=1):
            # Each takes the one turn for its set-up and gives it back once subscribed, so
            # the next finds it free.
            await ws.send_json(start(TRANSPORT_WS, watch, op=op))
            await bus.membership.until(lambda wanted=count: len(bus.subscribers) >= wanted)
        assert gateway.app.state.admission.running == 0
        body = await gateway.query("{ __typename }")
        assert body == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_variables_nested_past_the_limit_are_refused(
    simulator: RunningSimulator, protocol: str
) -> None:
    """Variables nested 500 deep used to be accepted over WebSocket (HTTP refuses past 16)."""
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    async with run_gateway(simulator) as gateway, socket(gateway, protocol) as ws:
        await initialised(ws)
        query = EMPTY_WATCH if protocol == LEGACY_WS else "{ __typename }"
        await ws.send_json(start(protocol, query, variables={"deep": deep}))
        answer = await answer_to(ws)
        assert answer["type"] == "error", answer
        assert error_codes(answer) == {"BAD_USER_INPUT"}
        assert "nest deeper than 16 levels" in json.dumps(answer)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_document_past_the_token_limit_is_refused(
    simulator: RunningSimulator, protocol: str
) -> None:
    """It used to fail with a traceback in the log and a bare `complete`."""
    long = "subscription { " + "__typename " * 20_001 + "}"
    async with run_gateway(simulator) as gateway, socket(gateway, protocol) as ws:
        await initialised(ws)
        await ws.send_json(start(protocol, long))
        answer = await answer_to(ws)
    assert answer["type"] == "error", answer
    assert error_codes(answer) == {"QUERY_TOO_COMPLEX"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_close_reason_quoting_the_client_fits_a_close_frame(
    simulator: RunningSimulator, protocol: str
) -> None:
    """A reason quotes the client's id or type; a close frame holds 123 bytes of it."""
    watch = 'subscription { classifiedStatusChanged(classifiedIds: ["c-1"]) { classifiedId } }'
    long_id = "é" * 300
    async with run_gateway(simulator) as gateway:
        async with socket(gateway, protocol) as ws:
            await initialised(ws)
            await ws.send_json(start(protocol, watch, op=long_id))
            await ws.send_json(start(protocol, watch, op=long_id))
            code, reason = await closed_with(ws)
        assert code == 4409
        assert reason.startswith("Subscriber for éé") and len(reason.encode()) <= 123
        async with socket(gateway, protocol) as ws:
            await ws.send_json({"type": "ü" * 300})
            code, reason = await closed_with(ws)
        assert code == 4400
        assert reason.startswith("Unknown message type: üü") and len(reason.encode()) <= 123


# --- one error vocabulary on every transport ----------------------------------------------------

LISTINGS = "query($refs: [ListingRef!]!) { listings(refs: $refs) { id } }"
VOCABULARY_CASES = [
    pytest.param("{ listing(", {}, None, id="does-not-parse"),
    pytest.param("{ nope }", {}, None, id="unknown-field"),
    pytest.param("{ listing(ref: 5) { id } }", {}, None, id="argument-of-the-wrong-type"),
    pytest.param(LISTINGS, {}, None, id="variable-missing"),
    pytest.param(LISTINGS, {"refs": [{"colour": "red"}]}, None, id="variable-of-the-wrong-type"),
    pytest.param(
        LISTINGS,
        {"refs": [{"classifiedId": f"c-{n}"} for n in range(201)]},
        None,
        id="too-many-refs",
    ),
    pytest.param("{ " + "a: __typename " * 201 + "}", {}, None, id="too-many-aliases"),
    pytest.param(LISTINGS, {"refs": []}, "Elsewhere", id="unknown-operation-name"),
]


async def http_codes(
    gateway: RunningGateway, query: str, variables: dict[str, Any], name: str | None
) -> set[str]:
    body: dict[str, Any] = {"query": query, "variables": variables}
    if name is not None:
        body["operationName"] = name
    response = await gateway.client.post(
        "/graphql", json=body, headers={"accept": "application/graphql-response+json"}
    )
    return {error["extensions"]["code"] for error in response.json()["errors"]}


@pytest.mark.parametrize(("query", "variables", "name"), VOCABULARY_CASES)
async def test_the_same_document_gets_the_same_code_on_every_transport(
    simulator: RunningSimulator, query: str, variables: dict[str, Any], name: str | None
) -> None:
    """A validation error over WebSocket said BAD_USER_INPUT where HTTP said
    GRAPHQL_VALIDATION_FAILED; a variable that does not coerce, INTERNAL_SERVER_ERROR; an
    unknown operation name over HTTP got a plain-text 400."""
    async with run_gateway(simulator) as gateway:
        codes = {"http": await http_codes(gateway, query, variables, name)}
        for protocol in PROTOCOLS:
            async with socket(gateway, protocol) as ws:
                await initialised(ws)
                payload: dict[str, Any] = {"variables": variables}
                if name is not None:
                    payload["operationName"] = name
                await ws.send_json(start(protocol, query, **payload))
                codes[protocol] = error_codes(await answer_to(ws))
    assert len(codes["http"]) == 1, codes
    assert codes["http"] <= {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "BAD_USER_INPUT",
        "QUERY_TOO_COMPLEX",
    }, codes
    assert codes[TRANSPORT_WS] == codes["http"], codes
    assert codes[LEGACY_WS] == codes["http"], codes


async def test_a_subscription_over_http_is_refused_with_where_to_send_it(
    simulator: RunningSimulator,
) -> None:
    """strawberry ran it as a query over POST, which answered INTERNAL_SERVER_ERROR."""
    watch = 'subscription { classifiedStatusChanged(classifiedIds: ["c-1"]) { classifiedId } }'
    async with run_gateway(simulator) as gateway:
        response = await gateway.client.post("/graphql", json={"query": watch})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "WebSocket" in error["message"]


# --- caps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_one_operation_past_the_per_socket_cap_is_refused_and_the_socket_stays(
    simulator: RunningSimulator, protocol: str
) -> None:
    """strawberry refused the 101st operation with an error without a code; the cap is now
    GATEWAY_MAX_SUBSCRIPTIONS_PER_CONNECTION, refused with OVERLOADED as DESIGN says."""
    watch = 'subscription { classifiedStatusChanged(classifiedIds: ["c-1"]) { classifiedId } }'
    async with (
        run_gateway(simulator, max_subscriptions_per_connection=2) as gateway,
        socket(gateway, protocol) as ws,
    ):
        await initialised(ws)
        for op in ("a", "b", "c"):
            await ws.send_json(start(protocol, watch, op=op))
        refused = await answer_to(ws, "c")
        assert refused["type"] == "error"
        assert error_codes(refused) == {"OVERLOADED"}
        assert "at most 2 operations at once" in json.dumps(refused)
        # One ends (messages are handled in order): its place is free, on the same socket.
        await ws.send_json({"id": "a", "type": "complete" if protocol == TRANSPORT_WS else "stop"})
        await ws.send_json(start(protocol, "{ __typename }", op="d"))
        served = await answer_to(ws, "d")
        assert served["payload"] == {"data": {"__typename": "Query"}}, served


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscription_past_the_process_bound_gets_an_error_message(
    simulator: RunningSimulator, protocol: str
) -> None:
    """GATEWAY_MAX_SUBSCRIPTIONS is refused as the per-socket cap is (DESIGN: "GraphQL as
    above"): an `error` message with OVERLOADED, the socket stays up, and queries on it are
    still served. It used to be a `next` with the error, then `complete`."""
    watch = 'subscription { classifiedStatusChanged(classifiedIds: ["c-1"]) { classifiedId } }'
    changes = 'subscription { listingChanged(refs: [{classifiedId: "c-1"}]) { cursor } }'
    async with (
        run_gateway(simulator, max_subscriptions=1) as gateway,
        socket(gateway, TRANSPORT_WS) as holder,
        socket(gateway, protocol) as ws,
    ):
        bus = gateway.app.state.runtime.events
        await initialised(holder)
        await holder.send_json(start(TRANSPORT_WS, watch))
        await bus.membership.until(lambda: len(bus.subscribers) == 1)
        await initialised(ws)
        for op, query in (("a", watch), ("b", changes)):
            await ws.send_json(start(protocol, query, op=op))
            refused = await answer_to(ws, op)
            assert refused["type"] == "error", refused
            assert error_codes(refused) == {"OVERLOADED"}
            assert "holds its most subscriptions" in json.dumps(refused)
        await ws.send_json(start(protocol, "{ __typename }", op="c"))
        served = await answer_to(ws, "c")
        assert served["payload"] == {"data": {"__typename": "Query"}}, served
        assert bus.stats.refused == 2


async def test_one_socket_past_the_process_cap_is_closed_1013(simulator: RunningSimulator) -> None:
    """WebSocket connections were unbounded; GATEWAY_MAX_WS_CONNECTIONS holds them."""
    async with (
        run_gateway(simulator, max_ws_connections=2) as gateway,
        socket(gateway, TRANSPORT_WS) as first,
        socket(gateway, LEGACY_WS) as second,
    ):
        await initialised(first)
        await initialised(second)
        async with socket(gateway, TRANSPORT_WS) as third:
            assert await closed_with(third) == (1013, "Too many WebSocket connections")
        await first.close()
        # The server ends its side of `first` in its own time; a new socket is let in
        # once it has (a refused one would be closed at once, so retry until served).
        while True:
            async with socket(gateway, TRANSPORT_WS) as fourth:
                await fourth.send_json({"type": "connection_init", "payload": {}})
                message = await fourth.receive(timeout=SAFETY_S)
                if message.type is aiohttp.WSMsgType.TEXT:
                    assert json.loads(message.data)["type"] == "connection_ack"
                    break
                assert fourth.close_code == 1013
