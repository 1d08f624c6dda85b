"""The answer to a `/graphql` HTTP request admission control refused
(`gateway.http.graphql_edge` takes each request's turn from the process's `AdmissionControl`).

A refused request answers 503 with `Retry-After` and the GraphQL error `OVERLOADED`, in the
media type the caller accepts.
"""

from __future__ import annotations

import math
from typing import Final

import orjson
from starlette.types import Scope, Send

from gateway.domain.errors import Overloaded

_GRAPHQL_RESPONSE: Final = b"application/graphql-response+json"


async def refuse(scope: Scope, send: Send, refused: Overloaded) -> None:
    """503 with `Retry-After` and the GraphQL error `OVERLOADED`."""
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
