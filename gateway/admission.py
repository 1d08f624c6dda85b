"""Admission control for `/graphql`: a bounded number of requests at once, a short queue.

Past `max_concurrent` running requests, up to `max_queued` more wait at most
`queue_timeout_s` for a turn; anything beyond is answered at once with HTTP 503,
`Retry-After` and the GraphQL error `OVERLOADED`. This keeps the latency of admitted
requests bounded and keeps the event loop free enough to honour upstream deadlines, instead
of letting every request slow down together until callers time out. WebSockets (long-lived
subscriptions) and the other routes are not admitted here.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.observability.metrics import Metrics
from gateway.observability.record import current_record

__all__ = ["Admission"]

_GRAPHQL_RESPONSE: Final = b"application/graphql-response+json"


class Admission:
    """ASGI middleware bounding concurrent `/graphql` HTTP requests."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int,
        max_queued: int,
        queue_timeout_s: float,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.metrics = metrics
        self.running = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(max_concurrent)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/graphql":
            await self.app(scope, receive, send)
            return
        if self._slots.locked():
            if self.queued >= self.max_queued:
                await self._refuse(scope, send, "queue_full")
                return
            if not await self._wait_for_turn():
                await self._refuse(scope, send, "queue_timeout")
                return
        else:
            await self._slots.acquire()  # a slot is free: returns without waiting
        self.running += 1
        self.metrics.admission_in_flight.set(self.running)
        try:
            await self.app(scope, receive, send)
        finally:
            self.running -= 1
            self.metrics.admission_in_flight.set(self.running)
            self._slots.release()

    async def _wait_for_turn(self) -> bool:
        self.queued += 1
        self.metrics.admission_queued.set(self.queued)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            return False
        finally:
            self.queued -= 1
            self.metrics.admission_queued.set(self.queued)
        return True

    async def _refuse(self, scope: Scope, send: Send, reason: str) -> None:
        self.metrics.admission_refused.labels(reason).inc()
        record = current_record.get()
        if record is not None:
            record.outcome = "overloaded"
        retry_after = max(1, math.ceil(self.queue_timeout_s))
        accept = b"".join(value for name, value in scope.get("headers", ()) if name == b"accept")
        media = _GRAPHQL_RESPONSE if _GRAPHQL_RESPONSE in accept else b"application/json"
        body = orjson.dumps(
            {
                "errors": [
                    {
                        "message": "The gateway is at capacity; retry shortly.",
                        "extensions": {"code": "OVERLOADED", "retryAfter": retry_after},
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
