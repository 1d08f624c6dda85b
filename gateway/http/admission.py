"""`/graphql` HTTP requests take their turn from the process's `AdmissionControl`.

A refused request answers 503 with `Retry-After` and the GraphQL error `OVERLOADED`, in the
media type the caller accepts.
"""

from __future__ import annotations

import math
from typing import Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.access.admission import AdmissionControl
from gateway.domain.errors import Overloaded

_GRAPHQL_RESPONSE: Final = b"application/graphql-response+json"


class Admission:
    """ASGI middleware admitting `/graphql` HTTP requests through an `AdmissionControl`."""

    def __init__(self, app: ASGIApp, *, control: AdmissionControl) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/graphql":
            await self.app(scope, receive, send)
            return
        try:
            await self.control.enter()
        except Overloaded as refused:
            await _refuse(scope, send, refused)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.control.leave()


async def _refuse(scope: Scope, send: Send, refused: Overloaded) -> None:
    retry_after = math.ceil(refused.retry_after)
    accept = b"".join(value for name, value in scope.get("headers", ()) if name == b"accept")
    media = _GRAPHQL_RESPONSE if _GRAPHQL_RESPONSE in accept else b"application/json"
    body = orjson.dumps(
        {
            "errors": [
                {
                    "message": refused.message,
                    "extensions": {"code": refused.code, "retryAfter": retry_after},
                }
            ]
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", media),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
