"""What a `/graphql` HTTP request passes before the GraphQL view, in one layer.

In order, each bound covering what follows it:

1. telemetry: the request's span, record, in-flight count, metrics and log line
   (`gateway.observability.edge`), around everything else, so refused requests count too;
2. the body, read whole within its size and time limits before anything holds a turn
   (`gateway.http.limits`: 413, 408);
3. one deadline for the rest: the wait for a turn, the upstream reads, the answer
   (`gateway.http.deadline`: 504 `DEADLINE_EXCEEDED`);
4. a turn from the process's `AdmissionControl` (`gateway.http.admission`: 503
   `OVERLOADED`);
5. GET, HEAD and POST to the view; any other method to Starlette's router (405).

These were five ASGI middlewares. As one coroutine, a request crosses one frame instead of
five, its `send` is wrapped once instead of twice, and the body's time limit and the
execution's deadline are one timer, moved when the body is in. With no-op spans no longer
made (`gateway.observability.spans.inner_span`), a one-listing request's CPU in `gateway
serve` fell ~8 % with legacy answers shared and ~4 % with a legacy read each
(`docs/performance.md`, "One edge layer for /graphql").
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access.admission import AdmissionControl
from gateway.domain.errors import Overloaded
from gateway.http.admission import refuse
from gateway.http.deadline import reads_budget, too_late
from gateway.http.limits import (
    BodyTooLarge,
    announced_too_large,
    read_body,
    replay,
    too_large,
    too_slow,
)
from gateway.infra.deadlines import caller_deadline
from gateway.observability.edge import RequestSeen, RequestTelemetry

__all__ = ["GraphQLEdge"]

_VIEW_METHODS = frozenset({"POST", "GET", "HEAD"})


class GraphQLEdge:
    """The ASGI app for `/graphql` over HTTP: telemetry, body, deadline and admission around
    `view`; `routed` answers the methods the view does not take.

    >>> GraphQLEdge(view, routed=app.routed, telemetry=telemetry, admission=control,
    ...             max_body_bytes=1 << 20, body_timeout_s=10, request_timeout_s=15)
    """

    def __init__(
        self,
        view: ASGIApp,
        *,
        routed: ASGIApp,
        telemetry: RequestTelemetry,
        admission: AdmissionControl,
        max_body_bytes: int,
        body_timeout_s: float,
        request_timeout_s: float,
    ) -> None:
        self.view = view
        self.routed = routed
        self.telemetry = telemetry
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.request_timeout_s = request_timeout_s
        self.reads_s = reads_budget(request_timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.telemetry.seen(scope) as seen:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen.status = message["status"]
                await send(message)

            await self._handle(scope, receive, send_status, seen)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, seen: RequestSeen) -> None:
        if announced_too_large(scope, self.max_body_bytes):
            await too_large(scope, receive, send)
            return
        executing = False
        try:
            async with asyncio.timeout(self.body_timeout_s) as limit:
                body = await read_body(receive, self.max_body_bytes)
                if body is None:
                    raise ClientDisconnect  # the telemetry counts a caller that left (499)
                executing = True
                limit.reschedule(asyncio.get_running_loop().time() + self.request_timeout_s)
                try:
                    await self.admission.enter()
                except Overloaded as refused:
                    await refuse(scope, send, refused)
                    return
                try:
                    with caller_deadline(self.reads_s):
                        app = self.view if scope["method"] in _VIEW_METHODS else self.routed
                        await app(scope, replay(body, receive), send)
                finally:
                    self.admission.leave()
        except TimeoutError:
            if not executing:
                await too_slow(scope, receive, send)
            elif not seen.status:
                seen.record.outcome = "error"
                await too_late(scope, send, self.request_timeout_s)
            # else: half an answer is out (to a caller that does not read it): returning
            # without finishing it makes the server close the connection.
        except BodyTooLarge:
            await too_large(scope, receive, send)
