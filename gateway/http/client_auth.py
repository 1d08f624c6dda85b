"""The ASGI layer in front of `/graphql` that enforces client tokens on HTTP and WebSocket.

- HTTP: `Authorization: Bearer <token>`, else 401 with `WWW-Authenticate: Bearer` and a
  GraphQL error `UNAUTHENTICATED`. The GraphiQL page itself (a browser's GET without a
  query) stays open: it is static, and the queries it sends carry the header.
- WebSocket: the same header on the upgrade, or `{"authorization": "Bearer …"}` in the
  `connection_init` payload (browsers cannot set headers on an upgrade). A socket with
  neither is closed with 4401 at its first message, before the GraphQL handler sees it.
- A token bound to agencies admits only requests whose `X-Intermediary-Id` (on the
  upgrade, for a WebSocket) names one of them: else HTTP 403 with `BAD_USER_INPUT`, and a
  WebSocket is closed with 4403.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access.client_tokens import (
    FORBIDDEN_AGENCY_MESSAGE,
    UNAUTHENTICATED_MESSAGE,
    ClientTokens,
    Verdict,
)
from gateway.graphql.request import is_graphiql_page

GRAPHQL_RESPONSE = "application/graphql-response+json"
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403


class ClientAuthGuard:
    def __init__(self, app: ASGIApp, tokens: ClientTokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.tokens.required:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        agency = headers.get("x-intermediary-id") or ""
        verdict = self.tokens.judge(headers.get("authorization"), agency=agency)
        if verdict is Verdict.ALLOWED:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send, agency, verdict)
        elif verdict is Verdict.FORBIDDEN:
            await _forbidden(headers, send)
        elif is_graphiql_page(
            scope.get("method", ""),
            QueryParams(scope.get("query_string", b"")),
            headers.get("accept", ""),
        ):
            await self.app(scope, receive, send)
        else:
            await _unauthorized(headers, send, presented="authorization" in headers)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, agency: str, on_upgrade: Verdict
    ) -> None:
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
            presented = _init_authorization(message)
            verdict = (
                on_upgrade if presented is None else self.tokens.judge(presented, agency=agency)
            )
            if verdict is Verdict.ALLOWED:
                return message
            refused = True
            code, reason = (
                (WS_FORBIDDEN, "Forbidden")
                if verdict is Verdict.FORBIDDEN
                else (WS_UNAUTHORIZED, "Unauthorized")
            )
            await send({"type": "websocket.close", "code": code, "reason": reason})
            return {"type": "websocket.disconnect", "code": code}

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


async def _forbidden(headers: Headers, send: Send) -> None:
    await _refuse(headers, send, 403, FORBIDDEN_AGENCY_MESSAGE, "BAD_USER_INPUT", [])


async def _unauthorized(headers: Headers, send: Send, *, presented: bool) -> None:
    challenge = 'Bearer realm="listing-gateway"'
    if presented:
        challenge += ', error="invalid_token"'
    extra = [(b"www-authenticate", challenge.encode())]
    await _refuse(headers, send, 401, UNAUTHENTICATED_MESSAGE, "UNAUTHENTICATED", extra)


async def _refuse(
    headers: Headers,
    send: Send,
    status: int,
    message: str,
    code: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    graphql_response = GRAPHQL_RESPONSE in headers.get("accept", "")
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    media_type = GRAPHQL_RESPONSE if graphql_response else "application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
