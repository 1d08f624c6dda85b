"""The request body, read whole under a size limit and a time limit before anything else.

`RequestBody` sits outside admission (`gateway.http.admission`): a client that announces a
body and then sends it slowly, or not at all, holds only its own connection, never one of
the turns every other caller needs. The body is read once, here, and handed to the app as
one message:

- more than `max_bytes` (announced by `Content-Length` or sent): 413 (the server reads and
  drops the rest, so the client hears it);
- not all there `timeout_s` after the headers: 408, and the connection is closed (the rest
  of the body may never come).

A caller that leaves before its body is in gets no answer; its request record says so.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.record import current_record


class RequestBody:
    """Reads each HTTP request's body (at most `max_bytes`, within `timeout_s`) before the app.

    >>> app.add_middleware(RequestBody, max_bytes=1 << 20, timeout_s=10)
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _too_large(scope, receive, send)
                return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            await _too_slow(scope, receive, send)
            return
        except _BodyTooLarge:
            await _too_large(scope, receive, send)
            return
        if body is None:
            record = current_record.get()
            if record is not None:
                # The edge's telemetry counts it as a caller that left (499).
                raise ClientDisconnect
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or None when the client disconnected first."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                raise _BodyTooLarge
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body in one message, then whatever the server says next
    (a disconnect, when the client leaves)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class _BodyTooLarge(Exception):
    pass


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    # The server reads and drops the rest of the body, so the client hears the 413.
    response = PlainTextResponse("Request body too large", status_code=413)
    await response(scope, receive, send)


async def _too_slow(scope: Scope, receive: Receive, send: Send) -> None:
    # The rest of the body may never come: the connection ends with this answer.
    response = PlainTextResponse(
        "Request body not received in time", status_code=408, headers={"connection": "close"}
    )
    await response(scope, receive, send)
