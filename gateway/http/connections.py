"""Connection bounds uvicorn does not set: a deadline and a size for a request's headers,
and a cap on open connections.

Measured on uvicorn 0.54 (httptools and h11 alike), and confirmed in its code:

- `timeout_keep_alive` is armed only once a response is complete, and every byte received
  disarms it: a connection that sends nothing, or half a header, or a header a byte at a
  time, is never closed. 20,000 such sockets exhausted the file descriptors.
- `limit_concurrency` answers 503 only once a request's headers are complete; the
  connection is accepted and held either way, so it bounds neither half-open sockets nor
  descriptors.
- h11 refuses headers past `h11_max_incomplete_event_size` (16 KiB), httptools has no bound.

`bounded_protocol` makes uvicorn's HTTP protocol class (httptools when installed, as
uvicorn's "auto" picks) enforce three bounds, handed to `uvicorn.Config(http=...)`:

- headers: from a connection's start, or the first byte of a request after the last
  response, the whole header block must be in within `header_timeout_s` and within
  `max_header_bytes`; else 408 (431 when too large) and the connection is closed (a
  connection that sent nothing is closed without an answer);
- connections: past `max_connections` open connections (HTTP and WebSocket), a new one is
  answered 503 and closed at once, so descriptors stay free for the others (gRPC, upstream
  sessions). The cap never exceeds the process's open-file limit less `FD_RESERVE`.

After the headers, a request's body has its own deadline (`gateway.http.limits`); an
upgraded WebSocket is the WebSocket protocol's (pings) and the GraphQL handler's
(`connection_init` timeout).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any, ClassVar, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] installs httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

# Descriptors kept for what is not an HTTP connection: listeners, upstream sessions, gRPC,
# Redis, logs.
FD_RESERVE: Final = 256

_TIMED_OUT: Final = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)
_TOO_LARGE: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)
_FULL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class _Bounds(asyncio.Protocol):
    """What the bounded protocols add to uvicorn's; mixed in before uvicorn's class."""

    header_timeout_s: ClassVar[float]
    max_header_bytes: ClassVar[int]
    max_connections: ClassVar[int]

    # uvicorn's, read here.
    transport: asyncio.Transport
    connections: set[Any]
    loop: asyncio.AbstractEventLoop

    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes: int = 0
    _header_tail: bytes = b""  # the last bytes seen, for a blank line split between reads

    def _awaiting_headers(self) -> bool:
        """Whether the next bytes belong to a request's header block (not to a body)."""
        raise NotImplementedError

    def _mid_headers(self) -> bool:
        """Whether the parser holds part of a header block."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self.transport.write(_FULL)
            self.transport.close()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers():
            # Measured up to the blank line that ends the block (what follows is body),
            # before the parser sees it.
            self._await_headers()
            tail = self._header_tail + data
            end = tail.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4 - len(self._header_tail)
            self._header_tail = tail[-3:]
            if self._header_bytes > self.max_header_bytes:
                self._refuse(_TOO_LARGE)
                return
        super().data_received(data)
        if self.transport.get_protocol() is not self:
            self._headers_in()  # upgraded: the connection is the WebSocket protocol's now
        elif self._mid_headers() and not self.transport.is_closing():
            # A body ended within these bytes and the next request's header block began
            # (its size is counted from the next read on).
            self._await_headers()
            self._header_bytes = max(self._header_bytes, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_in()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self._header_timer is None:
            self._header_bytes = 0
            self._header_tail = b""
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _headers_in(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        self._refuse(_TIMED_OUT if self._header_bytes else b"")

    def _refuse(self, answer: bytes) -> None:
        self._headers_in()
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()


class _BoundedH11(_Bounds, H11Protocol):
    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _mid_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_headers():
            self._headers_in()  # h11 parsed a whole request head


if HttpToolsProtocol is not None:

    class _BoundedHttpTools(_Bounds, HttpToolsProtocol):
        # Where the parser is: between messages, in a header block, or in a body. uvicorn
        # ignores the end of a body that arrives after its response; the parser does not.
        _in_message = False
        _in_head = False

        def _awaiting_headers(self) -> bool:
            return not self._in_message or self._in_head

        def _mid_headers(self) -> bool:
            return self._in_message and self._in_head

        def on_message_begin(self) -> None:
            self._in_message = self._in_head = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._headers_in()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_message = False
            super().on_message_complete()

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            super()._start_asgi_task(cycle, _HeadWithBody(app, cycle))


class _Gathered:
    """Stands in for a cycle's transport while a held response head and its body are
    written: what they write goes out in one `write`."""

    __slots__ = ("chunks", "closing")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def close(self) -> None:
        self.closing = True


class _HeadWithBody:
    """The app, its response head held until the body that follows it, so that an answer of
    known length leaves in one write: uvicorn writes the head and the body separately, and
    on a socket without Nagle's delay each write is a send and a wake-up of the reader.

    A head without `content-length` (a stream) goes out at once, as before.
    """

    __slots__ = ("app", "cycle")

    def __init__(self, app: Any, cycle: Any) -> None:
        self.app = app
        self.cycle = cycle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        cycle = self.cycle
        held: dict[str, Any] | None = None

        async def send_once(message: Any) -> None:
            nonlocal held
            if held is not None:
                head, held = held, None
                transport = cycle.transport
                gathered = _Gathered()
                cycle.transport = gathered
                try:
                    await send(head)
                    await send(message)
                finally:
                    cycle.transport = transport
                if gathered.chunks:
                    transport.write(b"".join(gathered.chunks))
                if gathered.closing:
                    transport.close()
            elif message["type"] == "http.response.start" and any(
                name.lower() == b"content-length" for name, _ in message.get("headers", ())
            ):
                held = message
            else:
                await send(message)

        await self.app(scope, receive, send_once)


def bounded_protocol(
    *, header_timeout_s: float, max_header_bytes: int, max_connections: int
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with these bounds, for `uvicorn.Config(http=...)`."""
    base: type[_Bounds] = _BoundedHttpTools if HttpToolsProtocol is not None else _BoundedH11
    cap = min(max_connections, descriptor_cap())
    if cap < max_connections:
        log.warning(
            "at most %d connections (GATEWAY_MAX_CONNECTIONS is %d): the open-file limit "
            "is %d, of which %d are kept for the rest",
            cap,
            max_connections,
            cap + FD_RESERVE,
            FD_RESERVE,
        )
    attributes = {
        "header_timeout_s": header_timeout_s,
        "max_header_bytes": max_header_bytes,
        "max_connections": cap,
    }
    bounded: type[asyncio.Protocol] = type("BoundedHTTPProtocol", (base,), attributes)
    return bounded


def descriptor_cap() -> int:
    """How many connections the process's open-file limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(1, soft - FD_RESERVE)
