"""The request body, read whole under a size limit and a time limit before anything else.

The body is read before admission (`gateway.http.graphql_edge` for `/graphql`, the
`RequestBody` middleware for the other routes): a client that announces a body and then
sends it slowly, or not at all, holds only its own connection, never one of the turns every
other caller needs. The body is read once and handed to the app as one message:

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
        if announced_too_large(scope, self.max_bytes):
            await too_large(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await read_body(receive, self.max_bytes)
        except TimeoutError:
            await too_slow(scope, receive, send)
            return
        except BodyTooLarge:
            await too_large(scope, receive, send)
            return
        if body is None:
            if current_record.get() is not None:
                # The edge's telemetry counts it as a caller that left (499).
                raise ClientDisconnect
            return
        await self.app(scope, replay(body, receive), send)


def announced_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's `Content-Length` is over `max_bytes`."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
            return True
    return False


async def read_body(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole body, or None when the client disconnected first; `BodyTooLarge` past
    `max_bytes`. The caller bounds the time it takes."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        seen += len(chunk)
        if seen > max_bytes:
            raise BodyTooLarge
        if not message.get("more_body", False):
            # Usually the whole body came in one message: no copy then.
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


def replay(body: bytes, receive: Receive) -> Receive:
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


class BodyTooLarge(Exception):
    """The body is past its size limit."""


async def too_large(scope: Scope, receive: Receive, send: Send) -> None:
    # The server reads and drops the rest of the body, so the client hears the 413.
    response = PlainTextResponse("Request body too large", status_code=413)
    await response(scope, receive, send)


async def too_slow(scope: Scope, receive: Receive, send: Send) -> None:
    # The rest of the body may never come: the connection ends with this answer.
    response = PlainTextResponse(
        "Request body not received in time", status_code=408, headers={"connection": "close"}
    )
    await response(scope, receive, send)
