"""Connection bounds (gateway.http.connections): a request's headers must arrive whole and in
time, and a process holds at most GATEWAY_MAX_CONNECTIONS connections.

Raw sockets on loopback against the real server. The header deadline is a setting, set
small here; a read that the server should end by closing is given a generous safety net
(on code without these bounds it would otherwise wait forever).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

# Long enough for any machine to close a socket it should close; only a hang reaches it.
SAFETY_S = 30
REQUEST = b'{"query":"{ __typename }"}'
FULL_POST = (
    b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(REQUEST)
) + REQUEST


@asynccontextmanager
async def raw(
    gateway: RunningGateway,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset, which a close
    with unread bytes from the client may cause, ends it too)."""
    received = b""
    async with asyncio.timeout(SAFETY_S):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def test_half_a_header_is_answered_408_and_closed(simulator: RunningSimulator) -> None:
    """Half-open sockets used to stay open for ever (20,000 of them exhausted the fds)."""
    async with run_gateway(simulator, header_timeout_s=0.2) as gateway, raw(gateway) as (r, w):
        w.write(b"GET /graphql HTTP/1.1\r\nHost: gateway\r\nX-Half: ")
        answer = await until_closed(r)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


async def test_a_header_sent_a_byte_at_a_time_is_cut_at_the_deadline(
    simulator: RunningSimulator,
) -> None:
    """Each byte used to re-arm nothing: the deadline runs from the request's first byte."""
    async with run_gateway(simulator, header_timeout_s=0.3) as gateway, raw(gateway) as (r, w):
        head = b"GET /graphql HTTP/1.1\r\nHost: gateway\r\n" + b"X-Drip: " + b"x" * 10_000
        closed = asyncio.ensure_future(until_closed(r))
        for byte in head:
            if closed.done():
                break
            w.write(bytes([byte]))
            await asyncio.sleep(0.01)
        answer = await closed
    # The client was still writing: its 408 may be lost to the reset that closes it.
    assert answer in (b"",) or answer.startswith(b"HTTP/1.1 408 "), answer
    assert closed.done()


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, header_timeout_s=0.2) as gateway, raw(gateway) as (r, _):
        assert await until_closed(r) == b""


async def test_half_a_second_request_on_a_kept_alive_connection_is_cut_too(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, header_timeout_s=0.2) as gateway, raw(gateway) as (r, w):
        w.write(FULL_POST)
        status = await r.readline()
        assert status.startswith(b"HTTP/1.1 200 "), status
        w.write(b"GET /healthz HTTP/1.1\r\nHo")
        rest = await until_closed(r)
    assert b"HTTP/1.1 408 " in rest, rest


async def test_after_a_413_the_next_request_on_the_connection_has_the_deadline_too(
    simulator: RunningSimulator,
) -> None:
    """The refused body's end comes after the answer (uvicorn then stops tracking it); the
    bytes after it are the next request's header block, with its deadline."""
    async with (
        run_gateway(simulator, header_timeout_s=0.2, max_body_bytes=4096) as gateway,
        raw(gateway) as (r, w),
    ):
        w.write(
            b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        status = await r.readline()
        assert status.startswith(b"HTTP/1.1 413 "), status
        w.write(b"x" * 5000 + b"GET /healthz HTTP/1.1\r\nHo")
        rest = await until_closed(r)
    assert b"HTTP/1.1 408 " in rest, rest


async def test_a_header_block_past_the_limit_is_refused_431(simulator: RunningSimulator) -> None:
    async with (
        run_gateway(simulator, max_header_bytes=4096) as gateway,
        raw(gateway) as (r, w),
    ):
        w.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
        for _ in range(20):
            w.write(b"X-Filler: " + b"y" * 500 + b"\r\n")
        w.write(b"\r\n")
        answer = await until_closed(r)
    assert answer.startswith(b"HTTP/1.1 431 "), answer


async def test_a_request_with_a_large_body_is_not_taken_for_large_headers(
    simulator: RunningSimulator,
) -> None:
    """Headers and body arrive in one write: only the header block counts."""
    async with run_gateway(simulator, max_header_bytes=1024) as gateway:
        padded = b'{"query":"{ __typename }","variables":{"pad":"' + b"p" * 200_000 + b'"}}'
        response = await gateway.client.post(
            "/graphql", content=padded, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text


async def test_past_the_connection_limit_a_connection_is_answered_503_and_closed(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, max_connections=3) as gateway:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(3):
                await held.enter_async_context(raw(gateway))
            async with raw(gateway) as (r, w):
                w.write(FULL_POST)
                answer = await until_closed(r)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"retry-after: 1" in answer
        # The three left: there is room again.
        async with raw(gateway) as (r, w):
            w.write(FULL_POST)
            assert (await r.readline()).startswith(b"HTTP/1.1 200 ")


async def test_a_websocket_outlives_the_header_deadline(simulator: RunningSimulator) -> None:
    """Once upgraded, the connection is the WebSocket's: the header timer is gone."""
    async with (
        run_gateway(simulator, header_timeout_s=0.2) as gateway,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{gateway.url}/graphql", protocols=("graphql-transport-ws",)) as ws,
    ):
        await asyncio.sleep(0.5)
        await ws.send_json({"type": "connection_init", "payload": {}})
        assert (await ws.receive_json())["type"] == "connection_ack"
