"""What every upstream request goes through before its handler: record, delay, fault.

`upstream_endpoint("v3", "classified_statuses")` wraps a handler so the request is logged and
counted, delayed by the upstream's latency, then answered by an injected fault if one
matches. Error bodies follow each upstream's shape: V3 `{"message"}`, the token endpoint
OAuth's `{"error"}`, legacy the `{"result": false, ...}` envelope.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .faults import Fault
from .state import RecordedRequest, State
from .vocabulary import Upstream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_KEY = web.AppKey("simulator_state", State)

_MALFORMED = {
    "v3": b'{"items": [{"portals": ["SL"], "status": "CREA',
    "token": b'{"access_token": "eyJhbGciOi',
    "legacy": b'{"result": true, "errors": [], "data": [{"adId": 6595',
}


class Reject(Exception):
    """Raised by a handler to answer with `response` (an auth or validation failure)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream request as a handler sees it: the request, its body bytes, the state."""

    request: web.Request
    raw: bytes
    state: State

    def legacy_error(self, status: int, message: str) -> web.Response:
        """A `result:false` envelope naming one error."""
        body = {"result": False, "errors": [self.legacy_error_entry(status, message)], "data": []}
        return web.json_response(body, status=status)

    def legacy_error_entry(self, code: int, message: str) -> Any:
        """An error as `{"code", "message"}`, or as a plain string for a fraction of requests."""
        style = self.state.legacy_error_style
        if style == "mixed":
            # Deterministic per request content, so one request always renders the same way.
            digest = zlib.crc32(self.request.raw_path.encode() + b"\n" + self.raw)
            return message if digest % 4 == 0 else {"code": code, "message": message}
        return message if style == "string" else {"code": code, "message": message}


CallHandler = Callable[[Call], Awaitable[web.StreamResponse]]


def v3_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)


def token_error(status: int, error: str, description: str | None = None) -> web.Response:
    body = (
        {"error": error}
        if description is None
        else {"error": error, "error_description": description}
    )
    return web.json_response(body, status=status)


def upstream_error(
    call: Call, upstream: str, status: int, message: str, headers: dict[str, str]
) -> web.Response:
    if upstream == "legacy":
        response = call.legacy_error(status, message)
        response.headers.update(headers)
        return response
    if upstream == "token":
        response = token_error(
            status, "server_error" if status >= 500 else "invalid_request", message
        )
        response.headers.update(headers)
        return response
    return v3_error(status, message, headers)


def upstream_endpoint(upstream: Upstream, endpoint: str) -> Callable[[CallHandler], Handler]:
    """Make a `Call` handler the aiohttp handler of `endpoint` of `upstream`.

    The names are those counters, faults and the request log use.
    """

    def decorate(handler: CallHandler) -> Handler:
        @wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            state = request.app[STATE_KEY]
            raw = await request.read()
            call = Call(request, raw, state)
            state.record(
                RecordedRequest(
                    upstream=upstream,
                    endpoint=endpoint,
                    method=request.method,
                    path=request.raw_path.split("?", 1)[0],
                    query=list(request.query.items()),
                    headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                    body=_recorded_body(raw, redact=upstream == "token"),
                )
            )
            delay = state.latency_s(upstream)
            if delay > 0:
                await state.hang(delay)  # cut short when the simulator stops
            fault = state.take_fault(upstream, endpoint)
            if fault is not None:
                response = await _apply(fault, call)
                if response is not None:
                    return response
            try:
                return await handler(call)
            except Reject as rejection:
                return rejection.response

        return wrapper

    return decorate


async def _apply(fault: Fault, call: Call) -> web.StreamResponse | None:
    """The faulty answer, or None to go on with the normal one (after a hang)."""
    if fault.kind == "timeout":
        await call.state.hang(fault.delay_s)
        return None
    if fault.kind == "reset":
        if call.request.transport is not None:
            call.request.transport.abort()
        return web.Response(status=500)  # never reaches the client: the socket is gone
    if fault.kind == "malformed":
        return web.Response(body=_MALFORMED[fault.upstream], content_type="application/json")
    status = 429 if fault.kind == "rate_limit" else fault.status
    headers: dict[str, str] = {}
    if status == 429:
        headers["Retry-After"] = str(fault.retry_after if fault.retry_after is not None else 1)
    message = "Too Many Requests" if status == 429 else f"Simulated upstream failure ({status})"
    return upstream_error(call, fault.upstream, status, message, headers)


def _recorded_body(raw: bytes, *, redact: bool) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    body: Any
    try:
        body = json.loads(text)
    except ValueError:
        pairs = parse_qsl(text) if redact else []
        body = dict(pairs) if pairs else text
    if redact and isinstance(body, dict) and "client_secret" in body:
        body = {**body, "client_secret": "<redacted>"}
    elif redact and isinstance(body, str):
        body = "<redacted>"
    return body
