"""HTTP/1.1 for the upstream calls: pooled keep-alive connections, one exchange at a time.

Every upstream read is one small request and one JSON answer. aiohttp's client spent more
CPU on each than the rest of the read did (its request and response objects, cookie jar,
stream reader, timers and tracing hooks: `python -m bench.upstream_call` prints a bare
aiohttp loop beside a bare `Pool`), and a 200-listing board makes 200 of them. `Pool` does the part of
HTTP the two upstreams need, on asyncio protocols, with httptools (llhttp, which uvicorn
uses for the gateway's own requests) reading the answers:

- GET, POST, PUT and DELETE with a body of known length; answers framed by
  `Content-Length`, chunked transfer encoding or the end of the connection;
- keep-alive: at most `limit` exchanges at once per pool (callers beyond wait for a turn),
  a connection reused only after a whole answer that did not ask to close; an idle
  connection the server closed is dropped as it closes, and a request that a reused
  connection loses before any byte of the answer is sent once more on a new one;
- TLS with the system's trust store for https URLs. No proxies (they would reroute
  credentials), no redirects (they could carry them elsewhere), no cookies, no compression.

Failures are `WireError`s: refused, reset or closed connections, malformed answers, an
answer longer than the caller allows (`AnswerTooLarge`). Timeouts are the caller's
(`asyncio.timeout` around `request`); a connection whose exchange is cancelled is closed,
never reused.

Depends on httptools and yarl only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast

import httptools
import yarl

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class WireError(Exception):
    """The exchange failed: no answer, or one that is not HTTP."""


class AnswerTooLarge(WireError):
    """The answer's body is longer than the caller allows (`status` is the answer's)."""

    def __init__(self, status: int, max_bytes: int) -> None:
        super().__init__(f"the answer's body exceeds {max_bytes} bytes")
        self.status = status


class _LostBeforeAnswer(WireError):
    """A reused connection closed before any byte of the answer came."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it reads one answer at a time."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.reusable = False
        self.max_bytes = 0
        self._status = 0
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._heard = False
        self._framed = False  # the answer says where it ends (a length, chunks, no body)

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection is not ours to reuse
            self.close()
            return
        self._heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's exception comes back wrapped, the callback's own as its context.
            stop = exc.__context__
            self._fail(
                stop.error
                if isinstance(stop, _Abort)
                else WireError(f"malformed answer ({type(exc).__name__})")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self._status and not self._framed:
            # Read until the end of the connection (HTTP/1.0 style): this was the end.
            self._complete()
        elif not self._heard:
            waiter.set_exception(_LostBeforeAnswer("the connection closed before an answer"))
        else:
            waiter.set_exception(WireError("the connection closed during the answer"))

    # --- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        headers = self._headers
        self._framed = (
            "content-length" in headers
            or "chunked" in headers.get("transfer-encoding", "").lower()
            or self._status in (204, 304)
            or 100 <= self._status < 200
        )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise _Abort(AnswerTooLarge(self._status, self.max_bytes))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_bytes:
            raise _Abort(AnswerTooLarge(self._status, self.max_bytes))
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._status, self._headers = 0, {}
            return
        self.reusable = self.parser.should_keep_alive()
        self._complete()

    # --- the exchange ------------------------------------------------------------------

    async def exchange(self, request: bytes, max_bytes: int) -> Answer:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        self.waiter = waiter
        self.max_bytes = max_bytes
        self.reusable = False
        self._heard = False
        self.transport.write(request)
        try:
            return await waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        answer = Answer(self._status, self._headers, b"".join(self._chunks))
        self._status, self._headers, self._chunks, self._size = 0, {}, [], 0
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(answer)

    def _fail(self, error: WireError) -> None:
        self.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)


class _Abort(Exception):
    """Raised from a parser callback to stop reading an answer."""

    def __init__(self, error: WireError) -> None:
        super().__init__(str(error))
        self.error = error


class Pool:
    """Keep-alive connections to the origins of one upstream (see the module docstring).

    >>> pool = Pool(limit=100)
    >>> answer = await pool.request("GET", yarl.URL("http://127.0.0.1:8080/x"), {}, None)
    >>> await pool.close()
    """

    def __init__(
        self,
        *,
        limit: int = 100,
        attempt_cap_s: float = 60.0,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        # The longest one attempt may take, whatever its caller allows (`gateway.upstreams._http`).
        self.attempt_cap_s = attempt_cap_s
        # Sent with every request that does not set them itself (names compared in lower case).
        self._defaults = dict(headers or {})
        self._turns = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._ssl = ssl_context
        self._open: set[_Connection] = set()
        self.closed = False

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; later requests fail."""
        self.closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    async def request(
        self,
        method: str,
        url: yarl.URL,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> Answer:
        """Send one request and read its whole answer."""
        if self.closed:
            raise WireError("the pool is closed")
        scheme, host = url.scheme, url.raw_host
        if scheme not in _DEFAULT_PORTS or not host:
            raise WireError(f"not an http(s) URL: {scheme}://")
        port = url.port or _DEFAULT_PORTS[scheme]
        origin = (scheme, host, port)
        if self._defaults:
            given = {name.lower() for name in headers}
            headers = {
                **{k: v for k, v in self._defaults.items() if k.lower() not in given},
                **headers,
            }
        wire = _request_bytes(method, url, host, port, scheme, headers, body)
        async with self._turns:
            while True:
                connection, reused = self._idle_connection(origin), True
                if connection is None:
                    connection, reused = await self._connect(origin), False
                try:
                    answer = await connection.exchange(wire, max_bytes)
                except _LostBeforeAnswer:
                    self._forget(connection)
                    if reused:
                        continue  # the server had closed it while idle: once more, anew
                    raise
                except BaseException:
                    connection.close()
                    self._forget(connection)
                    raise
                if connection.reusable and not self.closed:
                    self._idle.setdefault(origin, deque()).append(connection)
                else:
                    connection.close()
                    self._forget(connection)
                return answer

    def _idle_connection(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed
            if not connection.closed:
                return connection
            self._forget(connection)
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        secure = scheme == "https"
        if secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(origin),
                host.strip("[]"),
                port,
                ssl=self._ssl if secure else None,
                server_hostname=host.strip("[]") if secure else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise WireError(f"could not connect ({type(exc).__name__})") from exc
        self._open.add(connection)
        # More idle connections than turns would never be used at once.
        idle = sum(len(queue) for queue in self._idle.values())
        if idle + 1 > self.limit:
            for queue in self._idle.values():
                while queue and idle + 1 > self.limit:
                    stale = queue.popleft()
                    stale.close()
                    self._forget(stale)
                    idle -= 1
        return connection

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)


def _request_bytes(
    method: str,
    url: yarl.URL,
    host: str,
    port: int,
    scheme: str,
    headers: Mapping[str, str],
    body: bytes | None,
) -> bytes:
    target = url.raw_path_qs or "/"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    authority = host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise WireError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body) if body is not None else 0}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


__all__ = ["Answer", "AnswerTooLarge", "Pool", "WireError"]
