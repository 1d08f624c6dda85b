"""One deadline for a whole `/graphql` HTTP execution: its wait for admission, its upstream
reads and the writing of its answer.

The request body is in by then (`gateway.http.limits`). Upstream reads started under the
deadline are given a little less (a tenth of it, at most a second, is kept to write the
answer), so a read that honours it fails its fields with `DEADLINE_EXCEEDED` and the rest
of the answer still goes out; whatever is not under way at the deadline is cancelled and the
caller gets 504 with the GraphQL error `DEADLINE_EXCEEDED`. Either way, an error, not a hang.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.infra.deadlines import caller_deadline
from gateway.observability.record import current_record

DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"
_GRAPHQL_RESPONSE: Final = b"application/graphql-response+json"
# What is kept back from the upstream reads to write the answer: a tenth, at most this.
_ANSWER_MARGIN_S: Final = 1.0


class ExecutionDeadline:
    """ASGI middleware bounding each `/graphql` HTTP request to `timeout_s` seconds.

    >>> app.add_middleware(ExecutionDeadline, timeout_s=15)
    """

    def __init__(self, app: ASGIApp, *, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.reads_s = timeout_s - min(_ANSWER_MARGIN_S, timeout_s / 10)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/graphql":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                with caller_deadline(self.reads_s):
                    await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                # Half an answer is out (to a caller that does not read it): returning
                # without finishing it makes the server close the connection.
                return
            record = current_record.get()
            if record is not None:
                record.outcome = "error"
            await _too_late(scope, send, self.timeout_s)


async def _too_late(scope: Scope, send: Send, timeout_s: float) -> None:
    accept = b"".join(value for name, value in scope.get("headers", ()) if name == b"accept")
    media = _GRAPHQL_RESPONSE if _GRAPHQL_RESPONSE in accept else b"application/json"
    seconds = math.ceil(timeout_s) if timeout_s >= 1 else timeout_s
    body = orjson.dumps(
        {
            "errors": [
                {
                    "message": f"The request did not finish within {seconds} s.",
                    "extensions": {"code": DEADLINE_EXCEEDED},
                }
            ]
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 504,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
