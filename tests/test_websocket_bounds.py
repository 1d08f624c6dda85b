"""GraphQL over WebSocket gets the bounds HTTP has (gateway.graphql.websocket): an init
deadline on both protocols.

Real servers on loopback, real WebSocket clients (aiohttp). Deadlines are settings, set
small here; a close the server should make is awaited with a generous safety net only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
