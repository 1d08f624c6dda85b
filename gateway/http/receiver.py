"""The V3 webhook receiver: `POST /webhooks/v3/{secret}/classifieds/{classifiedId}/statuses`.

An HTTP edge only: it checks what HTTP can check (secret, size) and hands the body to
`Webhooks.accept`, which parses it, drops the cache and publishes. The answers:

- 201 `{"accepted": true, "duplicate": <bool>}`: a status, published (or seen before);
- 404 for a wrong secret, the same answer as for any unknown path, compared in constant time;
- 413 for a body above `GATEWAY_WEBHOOK_MAX_BODY_BYTES`;
- 400 `{"error": ...}` for malformed JSON or a body that is not a status.

The body is read as JSON whatever its content type says: V3's callback format is assumed, not
published, and a status refused for its header would be lost.

Bad input never answers 5xx, and nothing here calls an upstream.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.domain.errors import InvalidInput
from gateway.live.webhooks import RECEIVER_PREFIX, Delivery, Webhooks

PATH = RECEIVER_PREFIX + "/{secret}/classifieds/{classified_id}/statuses"


async def _read_at_most(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def receiver_route(*, max_body_bytes: int) -> Route:
    """The receiver route; the `Webhooks` comes from the app's runtime at request time."""

    async def receive(request: Request) -> Response:
        webhooks: Webhooks = request.app.state.runtime.webhooks
        if not webhooks.secret_matches(request.path_params["secret"]):
            return PlainTextResponse("Not Found", status_code=404)
        body = await _read_at_most(request, max_body_bytes)
        if body is None:
            return JSONResponse(
                {"error": f"the body is larger than {max_body_bytes} bytes"}, status_code=413
            )
        try:
            delivery = webhooks.accept(request.path_params["classified_id"], body)
        except InvalidInput as exc:
            return JSONResponse({"error": exc.message}, status_code=400)
        return JSONResponse(
            {"accepted": True, "duplicate": delivery is Delivery.DUPLICATE}, status_code=201
        )

    return Route(PATH, receive, methods=["POST"])
