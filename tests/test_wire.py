"""The upstream calls' HTTP/1.1 pool (`gateway.upstreams.wire`) against real loopback servers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
import yarl
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.upstreams.wire import AnswerTooLarge, Pool, WireError

# What a server does with one request: the bytes it answers, then whether it closes.
Reply = Callable[[bytes], Awaitable[tuple[bytes, bool]]]


class RawServer:
    """A loopback server that reads each request's head and answers what `reply` says."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    def url(self, path: str = "/status?id=1") -> yarl.URL:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return yarl.URL(f"http://127.0.0.1:{port}{path}", encoded=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                answer, close = await self.reply(request)
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answering(*answers: bytes, close: bool = False) -> Reply:
    """Answer the requests in turn with `answers` (the last one from then on)."""
    queue = list(answers)

    async def reply(request: bytes) -> tuple[bytes, bool]:
        return (queue.pop(0) if len(queue) > 1 else queue[0]), close

    return reply


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    async with Pool(limit=4) as p:
        yield p


async def test_answers_are_read_and_connections_kept_alive(pool: Pool) -> None:
    async with RawServer(answering(OK)) as server:
        for _ in range(3):
            answer = await pool.request("GET", server.url(), {"Accept": "application/json"}, None)
            assert (answer.status, answer.body) == (200, b'{"ok": true}')
            assert answer.headers["content-type"] == "application/json"
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"GET /status?id=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAccept: application/json\r\n" in first


async def test_the_pools_headers_go_with_requests_that_do_not_set_their_own() -> None:
    defaults = {"User-Agent": "Gateway/1 client/2 os/3"}
    async with Pool(headers=defaults) as pool, RawServer(answering(OK)) as server:
        await pool.request("GET", server.url(), {}, None)
        await pool.request("GET", server.url(), {"user-agent": "Own/1 a/2 b/3"}, None)
    assert b"\r\nUser-Agent: Gateway/1 client/2 os/3\r\n" in server.requests[0]
    assert b"Gateway/1" not in server.requests[1]
    assert b"\r\nuser-agent: Own/1 a/2 b/3\r\n" in server.requests[1]


async def test_a_body_is_sent_with_its_length(pool: Pool) -> None:
    async with RawServer(answering(OK)) as server:
        await pool.request("POST", server.url("/status/"), {}, b'{"userId": 1}')
        await pool.request("PUT", server.url("/webhooks"), {}, None)
    assert server.requests[0].endswith(b'Content-Length: 13\r\n\r\n{"userId": 1}')
    assert b"Content-Length: 0\r\n" in server.requests[1]


async def test_chunked_and_read_until_close_answers(pool: Pool) -> None:
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
    )
    async with RawServer(answering(chunked)) as server:
        assert (await pool.request("GET", server.url(), {}, None)).body == b'{"a": 1}'
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[1, 2]"
    async with RawServer(answering(until_close, close=True)) as server:
        assert (await pool.request("GET", server.url(), {}, None)).body == b"[1, 2]"
        # The answer said it would close: the next request opens a new connection.
        assert (await pool.request("GET", server.url(), {}, None)).body == b"[1, 2]"
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_replaced(pool: Pool) -> None:
    # The server answers "keep-alive" and then closes: whether its close has reached the
    # pool or comes as the next request is sent, that request goes out on a new connection.
    async with RawServer(answering(OK, close=True)) as server:
        await pool.request("GET", server.url(), {}, None)
        assert (await pool.request("GET", server.url(), {}, None)).status == 200
    assert server.connections == 2


async def test_a_reused_connection_lost_before_the_answer_is_tried_once_more(pool: Pool) -> None:
    answered = 0

    async def reply(request: bytes) -> tuple[bytes, bool]:
        nonlocal answered
        answered += 1
        # The second request on the first connection: closed without a word.
        return (b"", True) if answered == 2 else (OK, False)

    async with RawServer(reply) as server:
        await pool.request("GET", server.url(), {}, None)
        assert (await pool.request("GET", server.url(), {}, None)).status == 200
    assert (server.connections, len(server.requests)) == (2, 3)


async def test_a_new_connection_lost_before_the_answer_fails(pool: Pool) -> None:
    async with RawServer(answering(b"", close=True)) as server:
        with pytest.raises(WireError, match="closed before an answer"):
            await pool.request("GET", server.url(), {}, None)
    assert len(server.requests) == 1


async def test_malformed_cut_and_oversized_answers_fail(pool: Pool) -> None:
    async with RawServer(answering(b"NOT HTTP AT ALL\r\n\r\n")) as server:
        with pytest.raises(WireError, match="malformed answer"):
            await pool.request("GET", server.url(), {}, None)
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}"
    async with RawServer(answering(cut, close=True)) as server:
        with pytest.raises(WireError, match="during the answer"):
            await pool.request("GET", server.url(), {}, None)
    async with RawServer(answering(OK)) as server:
        with pytest.raises(AnswerTooLarge) as large:
            await pool.request("GET", server.url(), {}, None, max_bytes=5)
        assert large.value.status == 200
        # A chunked answer has no length to refuse up front: it is counted as it comes.
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n123456\r\n0\r\n\r\n"
    async with RawServer(answering(chunked)) as server:
        with pytest.raises(AnswerTooLarge):
            await pool.request("GET", server.url(), {}, None, max_bytes=5)


async def test_at_most_limit_exchanges_at_once_and_a_cancelled_one_is_not_reused() -> None:
    release, two = asyncio.Event(), asyncio.Event()
    in_flight = most = 0

    async def reply(request: bytes) -> tuple[bytes, bool]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == 2:
            two.set()
        await release.wait()
        in_flight -= 1
        return OK, False

    async with Pool(limit=2) as pool, RawServer(reply) as server:
        calls = [
            asyncio.ensure_future(pool.request("GET", server.url(), {}, None)) for _ in range(5)
        ]
        await two.wait()
        calls[0].cancel()  # its connection is closed; a waiting call takes its turn
        release.set()
        answers = await asyncio.gather(*calls[1:])
    assert [answer.status for answer in answers] == [200] * 4
    assert most == 2
    # Two connections at first; the cancelled call's was closed and replaced once.
    assert server.connections == 3


async def test_callers_waiting_for_a_turn_take_the_connection_an_answer_frees() -> None:
    async with Pool(limit=1) as pool, RawServer(answering(OK)) as server:
        calls = [pool.request("GET", server.url(f"/status?id={n}"), {}, None) for n in range(3)]
        answers = await asyncio.gather(*calls)
        assert (await pool.request("GET", server.url(), {}, None)).status == 200
    assert [answer.status for answer in answers] == [200] * 3
    assert server.connections == 1
    assert [request.split(b" ")[1] for request in server.requests[:3]] == [
        b"/status?id=0",
        b"/status?id=1",
        b"/status?id=2",
    ]


async def test_refused_connections_and_bad_input_fail_as_wire_errors(pool: Pool) -> None:
    async with RawServer(answering(OK)) as server:
        url = server.url()
        with pytest.raises(WireError, match="line break"):
            await pool.request("GET", url, {"X-Evil": "a\r\nHost: elsewhere"}, None)
    with pytest.raises(WireError, match="could not connect") as refused:
        await pool.request("GET", url, {}, None)  # nothing listens there now
    assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    with pytest.raises(WireError, match="not an http"):
        await pool.request("GET", yarl.URL("ftp://127.0.0.1/x"), {}, None)
    await pool.close()
    with pytest.raises(WireError, match="closed"):
        await pool.request("GET", url, {}, None)


async def test_https_with_a_trusted_certificate_and_not_without() -> None:
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"secure": request.secure})

    app = web.Application()
    app.router.add_get("/status", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=served)
    url = yarl.URL(f"https://127.0.0.1:{server.port}/status")
    try:
        trusting = ssl.create_default_context()
        authority.configure_trust(trusting)
        async with Pool(ssl_context=trusting) as pool:
            answer = await pool.request("GET", url, {}, None)
        assert (answer.status, answer.body) == (200, b'{"secure": true}')
        # The system's trust store does not know this authority: no exchange.
        async with Pool() as pool:
            with pytest.raises(WireError, match="could not connect"):
                await pool.request("GET", url, {}, None)
    finally:
        await server.close()
