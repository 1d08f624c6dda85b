"""GoedGeplaatst REST v1 status routes, under `/legacy/rest/v1`.

Behaviour follows docs/upstreams.md (legacy) and the choices it marks assumed (401 envelope on
a bad key, `{"code", "message"}` errors, the totals shape). Also chosen here:
- the key is read from `Authentication` only; `Authorization` is ignored;
- an unknown user is 404 `result:false`, on GET and POST alike; an unknown ad on GET is 404;
- POST answers the found ads in the order asked (a repeated adId once), `itemsPerPage`
  defaults to 1000 (the documented maximum; above it is 400) and `page` to 1; ads not found
  are named in `errors` on every page while `result` stays true (with
  `State.legacy_missing_ads = "refuse"` such a request answers `result:false`, HTTP 200,
  naming only the missing ads, as the failure envelope of docs/upstreams.md does);
- ids must be JSON integers (numeric strings are 400), as the documentation types them;
- a quarter of the distinct requests (a hash of path and body) render errors as plain strings
  (`State.legacy_error_style` forces one form);
- `force=true` answers after `State.force_delay_s` (the live portal check is slower);
- totals count an ad as `active` when any portal's publish is active, else as `archive`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .pipeline import Call, Reject, upstream_endpoint
from .records import JsonDict
from .vocabulary import LEGACY_MAX_ITEMS_PER_PAGE, SIM_LEGACY_API_KEY

PREFIX = "/legacy/rest/v1"

routes = web.RouteTableDef()


@routes.get(PREFIX + "/status/totals/{userId}/")
@upstream_endpoint("legacy", "status_totals")
async def status_totals(call: Call) -> web.StreamResponse:
    _authenticate(call)
    user_id = _path_int(call, "userId")
    ads = _user_ads(call, user_id)
    active = sum(1 for ad in ads.values() if _is_active(ad))
    data = {"userId": user_id, "active": active, "archive": len(ads) - active}
    return _envelope(data)


@routes.get(PREFIX + "/status/{userId}/{adId}")
@upstream_endpoint("legacy", "status_get")
async def status_get(call: Call) -> web.StreamResponse:
    _authenticate(call)
    user_id = _path_int(call, "userId")
    ad_id = _path_int(call, "adId")
    ad = _user_ads(call, user_id).get(ad_id)
    if ad is None:
        raise Reject(call.legacy_error(404, _not_found(user_id, ad_id)))
    return _envelope([ad])


@routes.post(PREFIX + "/status/")
@upstream_endpoint("legacy", "status_post")
async def status_post(call: Call) -> web.StreamResponse:
    _authenticate(call)
    body = _json_body(call)
    user_id = _int_field(call, body, "userId", required=True)
    ad_ids = _ad_ids(call, body.get("adId"))
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise _bad_request(call, "force must be a boolean")
    page = _int_field(call, body, "page", default=1)
    per_page = _int_field(call, body, "itemsPerPage", default=LEGACY_MAX_ITEMS_PER_PAGE)
    if page < 1 or not 1 <= per_page <= LEGACY_MAX_ITEMS_PER_PAGE:
        limits = f"page must be >= 1, itemsPerPage 1..{LEGACY_MAX_ITEMS_PER_PAGE}"
        raise _bad_request(call, limits)
    ads = _user_ads(call, user_id)
    if force:
        await asyncio.sleep(call.state.force_delay_s)
    found = [ads[a] for a in ad_ids if a in ads]
    errors = [call.legacy_error_entry(404, _not_found(user_id, a)) for a in ad_ids if a not in ads]
    if errors and call.state.legacy_missing_ads == "refuse":
        return web.json_response({"result": False, "errors": errors, "data": []})
    start = (page - 1) * per_page
    return _envelope(found[start : start + per_page], errors)


def _envelope(data: Any, errors: list[Any] | None = None) -> web.Response:
    return web.json_response({"result": True, "errors": errors or [], "data": data})


def _authenticate(call: Call) -> None:
    if call.request.headers.get("Authentication") != SIM_LEGACY_API_KEY:
        raise Reject(call.legacy_error(401, "Authentication failed: invalid or missing key"))


def _bad_request(call: Call, message: str) -> Reject:
    return Reject(call.legacy_error(400, message))


def _not_found(user_id: int, ad_id: int) -> str:
    return f"Advertisement {ad_id} not found for user {user_id}"


def _path_int(call: Call, name: str) -> int:
    raw = call.request.match_info[name]
    if not (raw.isascii() and raw.isdigit()):
        raise _bad_request(call, f"{name} must be an integer")
    return int(raw)


def _user_ads(call: Call, user_id: int) -> dict[int, JsonDict]:
    if not call.state.legacy_user_exists(user_id):
        raise Reject(call.legacy_error(404, f"User {user_id} not found"))
    return call.state.legacy_ads(user_id)


def _json_body(call: Call) -> dict[str, Any]:
    try:
        body = json.loads(call.raw or b"null")
    except ValueError:
        raise _bad_request(call, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad_request(call, "the body must be a JSON object")
    return body


def _int_field(
    call: Call, body: dict[str, Any], name: str, *, required: bool = False, default: int = 0
) -> int:
    if name not in body:
        if required:
            raise _bad_request(call, f"{name} is required")
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_request(call, f"{name} must be an integer")
    return value


def _ad_ids(call: Call, value: object) -> list[int]:
    ids = value if isinstance(value, list) else [value]
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise _bad_request(call, "adId must be an integer or a non-empty list of integers")
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


def _is_active(ad: JsonDict) -> bool:
    portals = ad.get("portals")
    if not isinstance(portals, list):
        return False
    return any(
        isinstance(p, dict) and isinstance(p.get("publish"), dict) and p["publish"].get("active")
        for p in portals
    )
