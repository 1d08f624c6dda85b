"""One deadline for a whole `/graphql` HTTP execution: its wait for admission, its upstream
reads and the writing of its answer (set by `gateway.http.graphql_edge`).

The request body is in by then (`gateway.http.limits`). Upstream reads started under the
deadline are given a little less (a tenth of it, at most a second, is kept to write the
answer), so a read that honours it fails its fields with `DEADLINE_EXCEEDED` and the rest
of the answer still goes out; whatever is not under way at the deadline is cancelled and the
caller gets 504 with the GraphQL error `DEADLINE_EXCEEDED`. Either way, an error, not a hang.
"""

from __future__ import annotations

import math
from typing import Final

import orjson
from starlette.types import Scope, Send

DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"
_GRAPHQL_RESPONSE: Final = b"application/graphql-response+json"
# What is kept back from the upstream reads to write the answer: a tenth, at most this.
_ANSWER_MARGIN_S: Final = 1.0


def reads_budget(timeout_s: float) -> float:
    """What upstream reads under a deadline of `timeout_s` are given: the rest is kept to
    write the answer."""
    return timeout_s - min(_ANSWER_MARGIN_S, timeout_s / 10)


async def too_late(scope: Scope, send: Send, timeout_s: float) -> None:
    """504 with the GraphQL error `DEADLINE_EXCEEDED`, in the media type the caller accepts."""
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
