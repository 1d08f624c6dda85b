"""The V3 webhook receiver: `POST /webhooks/v3/{secret}/classifieds/{classifiedId}/statuses`.

An HTTP edge only: it checks what HTTP can check (secret, media type, size) and hands the
body to `Webhooks.accept`, which parses it, drops the cache and publishes. The answers:

- 201 `{"accepted": true, "duplicate": <bool>}`: a status, published (or seen before);
- 404 for a wrong secret, the same answer as for any unknown path, compared in constant time;
- 415 for a body that is not JSON by its content type;
- 413 for a body above `GATEWAY_WEBHOOK_MAX_BODY_BYTES`;
- 400 `{"error": ...}` for malformed JSON, a body that is not a status, or a body whose
  classifiedId differs from the path's.

Bad input never answers 5xx, and nothing here calls an upstream.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.domain.errors import InvalidInput
from gateway.live.webhooks import RECEIVER_PREFIX, Delivery, Webhooks

PATH = RECEIVER_PREFIX + "/{secret}/classifieds/{classified_id}/statuses"


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


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
        if not _is_json(request.headers.get("content-type", "")):
            return JSONResponse({"error": "the body must be application/json"}, status_code=415)
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
