"""A lean HTTP/1.1 load for the gateway: keep-alive connections that each send one prepared
request again as soon as its answer is in, driven from the connections' own callbacks.

On two cores the load generator shares the CPU with what it measures. aiohttp's client spends
~0.3 ms of CPU per small request (its request and response objects, cookies, timers, the
stream reader). A coroutine per client awaiting a future per request still took ~0.045 ms,
and at the 4,000+ requests/s of two gateway workers that was a fifth of a core taken from
them. Here, as in `wrk`, no task wakes per request: the protocol reads the answer, records
its latency and writes the next request in the same callback. It reads answers with
`Content-Length` only (the gateway's `/graphql` answers have one).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final, cast
from urllib.parse import urlsplit

import orjson

_END_OF_HEAD: Final = b"\r\n\r\n"
_LENGTH: Final = b"\r\ncontent-length:"


class RawHTTPError(Exception):
    """The answer is not one this client reads."""


def take_answer(buffer: bytearray) -> tuple[int, bytes] | None:
    """The first whole answer in `buffer` as (status, body), removed from it; None until
    it is all there."""
    end = buffer.find(_END_OF_HEAD)
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    start = head.find(_LENGTH)
    if not head.startswith(b"http/1.1 ") or start < 0:
        raise RawHTTPError(f"not an answer of known length: {head[:200]!r}")
    stop = head.find(b"\r\n", start + 2)
    length = int(head[start + len(_LENGTH) : stop if stop >= 0 else len(head)])
    body_start = end + 4
    if len(buffer) < body_start + length:
        return None
    status = int(head[9:12])
    body = bytes(buffer[body_start : body_start + length])
    del buffer[: body_start + length]
    return status, body


def failure(status: int, body: bytes) -> str | None:
    """Why an answer is not a GraphQL success, or None if it is one."""
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}"
    if b'"errors"' in body:
        errors = orjson.loads(body).get("errors")
        if errors:
            return orjson.dumps(errors[:1]).decode()
    return None


@dataclass
class LoopResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    wall_s: float = 0.0  # from the first request sent to the last answer read


class _Connection(asyncio.Protocol):
    def __init__(self, loop: ClosedLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.begun = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def send(self) -> None:
        assert self.transport is not None
        self.busy = True
        self.begun = time.perf_counter()
        self.transport.write(self.loop.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            return
        try:
            answer = take_answer(self.buffer)
        except RawHTTPError as exc:
            self.busy = False
            self.loop.failed(self, str(exc))
            return
        if answer is not None:
            self.busy = False
            self.loop.answered(self, time.perf_counter() - self.begun, *answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.loop.failed(self, f"connection closed ({exc})")
        self.loop.closed(self)


class ClosedLoop:
    """POSTs one body to one URL from `connections` keep-alive connections at once, each
    sending again as soon as it has its answer, until `requests` are sent or `duration_s`
    has passed (and at least `min_requests` are sent)."""

    def __init__(
        self,
        url: str,
        body: bytes,
        *,
        connections: int,
        requests: int,
        duration_s: float,
        min_requests: int,
        content_type: str = "application/json",
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.request = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.connections = connections
        self.requests = requests
        self.duration_s = duration_s
        self.min_requests = min_requests
        self.result = LoopResult()
        self._sent = 0
        self._deadline = 0.0
        self._open: set[_Connection] = set()
        self._reconnecting = 0
        self._done: asyncio.Future[None] | None = None

    async def run(self) -> LoopResult:
        """Opens the connections, then drives them; returns when the last answer is in."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        opened = await asyncio.gather(*(self._connect() for _ in range(self.connections)))
        try:
            started = time.perf_counter()
            self._deadline = started + self.duration_s
            for connection in opened:
                self._next(connection)
            self._maybe_done()
            await self._done
            self.result.wall_s = time.perf_counter() - started
        finally:
            for connection in list(self._open):
                if connection.transport is not None:
                    connection.transport.close()
        return self.result

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _Connection(self), self.host, self.port
        )
        self._open.add(connection)
        return connection

    def _more(self) -> bool:
        sent = self._sent
        return sent < self.requests and (
            sent < self.min_requests or time.perf_counter() < self._deadline
        )

    def _next(self, connection: _Connection) -> None:
        if self._more() and connection.transport is not None:
            self._sent += 1
            connection.send()
        else:
            self._maybe_done()

    def _maybe_done(self) -> None:
        done = self._done
        if done is None or done.done() or self._reconnecting:
            return
        if not any(c.busy for c in self._open):
            done.set_result(None)

    def answered(self, connection: _Connection, seconds: float, status: int, body: bytes) -> None:
        self.result.latencies_ms.append(seconds * 1000)
        why = failure(status, body)
        if why is not None:
            self._error(why)
        self._next(connection)

    def failed(self, connection: _Connection, why: str) -> None:
        self.result.latencies_ms.append((time.perf_counter() - connection.begun) * 1000)
        self._error(why)
        if connection.transport is not None:
            connection.transport.close()  # what is left in its buffer cannot be framed

    def closed(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if self._done is None or self._done.done():
            return
        if self._more():
            # A lost connection is replaced, as a client of the gateway would.
            self._reconnecting += 1
            replacing = asyncio.get_running_loop().create_task(self._connect())
            replacing.add_done_callback(self._replaced)
        else:
            self._maybe_done()

    def _replaced(self, task: asyncio.Task[_Connection]) -> None:
        self._reconnecting -= 1
        if task.cancelled() or task.exception() is not None:
            why = "cancelled" if task.cancelled() else repr(task.exception())
            self._error(f"could not reconnect ({why})")
            self._maybe_done()
            return
        connection = task.result()
        if self._done is not None and self._done.done():
            if connection.transport is not None:
                connection.transport.close()
            return
        self._next(connection)

    def _error(self, why: str) -> None:
        self.result.errors += 1
        if self.result.first_error is None:
            self.result.first_error = why[:300]
