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
from typing import Any

import aiohttp

from gateway.app import create_app, server_options
from gateway.http.connections import bounded_protocol
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway, serve_app, settings_for

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


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer of known length from a kept-alive connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_an_idle_connection_is_kept_open_for_keep_alive_s_then_closed(
    simulator: RunningSimulator,
) -> None:
    """uvicorn's own 5 s is shorter than most clients' idle timeouts (aiohttp's 15 s): a
    client reusing a connection as the gateway closed it lost that request, 12 of 200 reuses
    near the 5 s mark. The gateway keeps an idle connection `keep_alive_s` (75 s)."""
    assert server_options(settings_for(simulator))["timeout_keep_alive"] == 75
    async with run_gateway(simulator, keep_alive_s=0.3) as gateway, raw(gateway) as (r, w):
        for _ in range(2):  # reused at once: still open
            w.write(FULL_POST)
            assert (await _answer(r)).startswith(b"HTTP/1.1 200 ")
        loop = asyncio.get_running_loop()
        idle_from = loop.time()
        rest = await until_closed(r)  # then closed by the gateway, with nothing sent
        assert loop.time() - idle_from >= 0.3 * 0.9  # not before its time (timer slack)
    assert rest == b""


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


class _CountedTransport:
    """A real transport whose writes are also kept, to count them."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def _counting(protocol: type[asyncio.Protocol], writes: list[bytes]) -> type[asyncio.Protocol]:
    class Counting(protocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            super().connection_made(_CountedTransport(transport, writes))

    return Counting


async def test_an_answer_of_known_length_leaves_in_one_write(simulator: RunningSimulator) -> None:
    """uvicorn wrote a response's head and its body separately: two sends, two wake-ups of
    the reader, for every answer."""
    settings = settings_for(simulator)
    writes: list[bytes] = []
    options = server_options(settings)
    options["http"] = _counting(options["http"], writes)
    async with serve_app(create_app(settings), **options) as url, aiohttp.ClientSession() as http:
        async with http.post(f"{url}/graphql", json={"query": "{ __typename }"}) as response:
            body = await response.read()
        async with http.get(f"{url}/healthz") as health:
            health_body = await health.read()
    assert response.status == 200 and health.status == 200
    answers = [w for w in writes if w.startswith(b"HTTP/1.1 ")]
    assert len(answers) == len(writes) == 2, writes
    assert answers[0].endswith(b"\r\n\r\n" + body)
    assert answers[1].endswith(b"\r\n\r\n" + health_body)


async def test_a_streamed_answer_sends_its_head_at_once() -> None:
    """Without a length the head is not held back for a body that may come much later."""
    writes: list[bytes] = []
    second_chunk = asyncio.Event()

    async def streaming(scope: dict[str, object], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await second_chunk.wait()
        await send({"type": "http.response.body", "body": b"late", "more_body": False})

    protocol = bounded_protocol(header_timeout_s=5, max_header_bytes=8192, max_connections=10)
    async with serve_app(streaming, http=_counting(protocol, writes)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
        async with asyncio.timeout(SAFETY_S):
            head = await reader.readuntil(b"\r\n\r\n")
        second_chunk.set()
        async with asyncio.timeout(SAFETY_S):
            rest = await reader.readuntil(b"0\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head
    assert b"late" in rest
