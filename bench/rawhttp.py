"""A lean HTTP/1.1 client for the load generator: keep-alive connections that send one
prepared request and read its answer, nothing else.

On two cores the load generator shares the CPU with what it measures. aiohttp's client spends
~0.3 ms of CPU per small request (its request and response objects, cookies, timers, the
stream reader); this one ~0.03 ms, as `wrk` or `oha` would, so that a measurement of
several gateway workers is not bounded by the generator's own share of the cores. It reads
answers with `Content-Length` only (the gateway's `/graphql` answers have one).
"""

from __future__ import annotations

import asyncio
from typing import Final, cast
from urllib.parse import urlsplit

_END_OF_HEAD: Final = b"\r\n\r\n"


class RawHTTPError(Exception):
    """The connection closed, or the answer is not one this client reads."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._answer()
        except RawHTTPError as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(RawHTTPError(f"connection closed ({exc})"))

    def _answer(self) -> tuple[int, bytes] | None:
        buffer = self.buffer
        end = buffer.find(_END_OF_HEAD)
        if end < 0:
            return None
        head = bytes(buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if not head.startswith(b"http/1.1 ") or start < 0:
            raise RawHTTPError(f"not an answer of known length: {head[:200]!r}")
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        body_start = end + 4
        if len(buffer) < body_start + length:
            return None
        status = int(head[9:12])
        body = bytes(buffer[body_start : body_start + length])
        del buffer[: body_start + length]
        return status, body

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        if self.lost:
            raise RawHTTPError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


class RawPost:
    """POSTs one body to one URL over a pool of keep-alive connections."""

    def __init__(self, url: str, body: bytes, content_type: str = "application/json") -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.request = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []

    async def __call__(self) -> tuple[int, bytes]:
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            answer = await connection.exchange(self.request)
        except BaseException:
            if connection.transport is not None:
                connection.transport.close()
            raise
        self._idle.append(connection)
        return answer

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._all.append(connection)
        return connection

    def close(self) -> None:
        for connection in self._all:
            if connection.transport is not None:
                connection.transport.close()
        self._all.clear()
        self._idle.clear()
