"""The ASGI layer in front of `/graphql` that enforces client tokens on HTTP and WebSocket.

- HTTP: `Authorization: Bearer <token>`, else 401 with `WWW-Authenticate: Bearer` and a
  GraphQL error `UNAUTHENTICATED`. The GraphiQL page itself (a browser's GET without a
  query) stays open: it is static, and the queries it sends carry the header.
- WebSocket: the same header on the upgrade, or `{"authorization": "Bearer …"}` in the
  `connection_init` payload (browsers cannot set headers on an upgrade). A socket with
  neither is closed with 4401 at its first message, before the GraphQL handler sees it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access.client_tokens import UNAUTHENTICATED_MESSAGE, ClientTokens
from gateway.graphql.request import is_graphiql_page

GRAPHQL_RESPONSE = "application/graphql-response+json"
WS_UNAUTHORIZED = 4401


class ClientAuthGuard:
    def __init__(self, app: ASGIApp, tokens: ClientTokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.tokens.required:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.tokens.allows(headers.get("authorization")):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        elif is_graphiql_page(
            scope.get("method", ""),
            QueryParams(scope.get("query_string", b"")),
            headers.get("accept", ""),
        ):
            await self.app(scope, receive, send)
        else:
            await _unauthorized(headers, send, presented="authorization" in headers)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = False
        judged = False

        async def guarded_receive() -> Message:
            nonlocal refused, judged
            message = await receive()
            if refused:
                return {"type": "websocket.disconnect", "code": WS_UNAUTHORIZED}
            if judged or message["type"] != "websocket.receive":
                return message
            judged = True
            if self.tokens.allows(_init_authorization(message)):
                return message
            refused = True
            await send(
                {"type": "websocket.close", "code": WS_UNAUTHORIZED, "reason": "Unauthorized"}
            )
            return {"type": "websocket.disconnect", "code": WS_UNAUTHORIZED}

        async def guarded_send(message: Message) -> None:
            if refused and message["type"] in ("websocket.send", "websocket.close"):
                return  # the socket is closed already
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


def _init_authorization(message: Message) -> str | None:
    """The `authorization` of a `connection_init` message's payload, if that is what it is."""
    raw = message.get("text") or message.get("bytes")
    if not raw:
        return None
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or parsed.get("type") != "connection_init":
        return None
    payload = parsed.get("payload")
    if not isinstance(payload, dict):
        return None
    value = payload.get("authorization", payload.get("Authorization"))
    return value if isinstance(value, str) else None


async def _unauthorized(headers: Headers, send: Send, *, presented: bool) -> None:
    challenge = 'Bearer realm="listing-gateway"'
    if presented:
        challenge += ', error="invalid_token"'
    graphql_response = GRAPHQL_RESPONSE in headers.get("accept", "")
    body = orjson.dumps(
        {
            "errors": [
                {"message": UNAUTHENTICATED_MESSAGE, "extensions": {"code": "UNAUTHENTICATED"}}
            ]
        }
    )
    media_type = GRAPHQL_RESPONSE if graphql_response else "application/json"
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
