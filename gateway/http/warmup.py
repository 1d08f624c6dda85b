"""Warm-up before the first caller: the V3 token, one pass through the GraphQL path, and the
trusted documents parsed and validated.

A fresh process otherwise makes its first caller wait for an OAuth token round trip and for
the first parse, validation and compilation of a listings query, with every module and code
path still cold (~3x a steady request). With `GATEWAY_TRUSTED_DOCUMENTS`, every listed
document is parsed and validated as a request's would be (never executed), so each one's
first request is already a known one (`gateway.graphql.known`). The lifespan runs this
before uvicorn accepts connections, bounded by the upstream timeout; a failure is logged,
never fatal (the first request then pays, as it would have).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.types import ASGIApp, Message

from gateway.domain.errors import GatewayError
from gateway.domain.models import Caller
from gateway.upstreams.v3_auth import OAuthCredentials

log = logging.getLogger(__name__)

# Every field of a listing, for no listing: the whole path runs, no upstream is called.
WARMUP_QUERY = """query Warmup($refs: [ListingRef!]!) {
  listings(refs: $refs) {
    id classifiedId state
    legacyAd { userId adId }
    portals { portal provider state since message actionRequired }
    classified {
      id
      latestStatus { id status subStatus message portals date actionRequired }
      statuses(first: 20) {
        nodes { id status subStatus message portals date actionRequired }
        edges { cursor node { id } }
        pageInfo { hasNextPage endCursor }
      }
    }
    legacy {
      userId adId
      portals {
        portal
        publish { active online pending processing error startDate closeDate remoteAdId }
        features { feature active pending processing error startDate }
      }
    }
  }
}"""


async def warm_up(graphql: ASGIApp, credentials: object, timeout_s: float) -> None:
    """Fetch the default agency's V3 token and run `WARMUP_QUERY` through `graphql`."""
    try:
        async with asyncio.timeout(timeout_s):
            if isinstance(credentials, OAuthCredentials):
                await credentials.authorization(Caller())
            status = await _post(graphql, {"query": WARMUP_QUERY, "variables": {"refs": []}})
            if status != 200:
                log.warning("warm-up query answered HTTP %s", status)
            await _learn_trusted(graphql)
    except (GatewayError, TimeoutError) as exc:
        log.warning("warm-up incomplete, the first request will be slower: %s", exc)


async def _learn_trusted(graphql: Any) -> None:
    """Parses and validates each trusted document (the view's `documents.trusted`)."""
    trusted = getattr(getattr(graphql, "documents", None), "trusted", None)
    schema = getattr(graphql, "schema", None)
    known = getattr(schema, "known", None)
    if not trusted or known is None or schema is None:
        return
    invalid = 0
    for text in trusted.values():
        invalid += not known.learn(schema._schema, text)
        await asyncio.sleep(0)  # the warm-up's deadline may end the loop between documents
    log.info("warm-up: %d trusted documents parsed and validated", len(trusted))
    if invalid:
        log.warning("%d trusted documents do not validate: their requests will be refused", invalid)


async def _post(app: ASGIApp, body: dict[str, Any]) -> int:
    """POST `body` to `app` as JSON, in process; returns the status."""
    payload = orjson.dumps(body)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no disconnect until the answer is out
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status
