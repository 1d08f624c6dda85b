"""AVIV Classifieds Management V3 routes (under `/v3`) and the OAuth token route.

Behaviour follows docs/upstreams.md ("Classifieds V3"), with the choices it marks assumed:
newest-first items, `nextToken` = base64 of `{"statusDate","statusId","classifiedId"}` (media
tokens add `mediaId`), `{"message"}` error bodies, `"OK"` webhook answers. Also chosen here:
- `limit` defaults to 20; above 100 at most 100 items come back; 0, negative or non-numeric is
  400. The media endpoint also takes an integral number such as `5.0` (documented as number).
- `current` takes `true`/`false`/`1`/`0` (any case); `filter` takes only `latest`. Either asks
  for the item with the greatest statusDate among those the status/portal filters keep.
- Array params are repeated keys; a comma-joined value is an unknown value, hence 400.
- Checks run in this order: User-Agent (403), bearer token (401), query params (400), then
  existence (404) and ownership (403).
- Any intermediary id gets a token; it then sees only classifieds of that intermediary.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from yarl import URL

from .pipeline import Call, Reject, token_error, upstream_endpoint, v3_error
from .records import UNDATED, ClassifiedRecord, StoredStatus, newest_first, parse_status_date
from .state import TokenGrant
from .vocabulary import (
    AUDIENCES,
    CLASSIFIED_STATUSES,
    PORTALS,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    USER_AGENT_PATTERN,
)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_TOKEN_FIELDS = ("client_id", "client_secret", "grant_type", "audience", "intermediary_id")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})

routes = web.RouteTableDef()


@routes.post("/oauth/token")
@upstream_endpoint("token", "token")
async def issue_token(call: Call) -> web.StreamResponse:
    if call.request.content_type != "application/json":
        return token_error(400, "invalid_request", "the body must be JSON (application/json)")
    try:
        body = json.loads(call.raw)
    except ValueError:
        return token_error(400, "invalid_request", "the body is not valid JSON")
    if not isinstance(body, dict):
        return token_error(400, "invalid_request", "the body must be a JSON object")
    for name in _TOKEN_FIELDS:
        if not isinstance(body.get(name), str) or not body[name]:
            return token_error(400, "invalid_request", f"missing or empty field: {name}")
    if body["grant_type"] != "client_credentials":
        return token_error(400, "unsupported_grant_type")
    if body["client_id"] != SIM_CLIENT_ID or body["client_secret"] != SIM_CLIENT_SECRET:
        return token_error(401, "invalid_client")
    if body["audience"] not in AUDIENCES:
        return token_error(400, "invalid_request", "unknown audience")
    state = call.state
    token = state.issue_token(
        body["intermediary_id"], client_id=body["client_id"], audience=body["audience"]
    )
    return web.json_response(
        {"access_token": token, "expires_in": int(state.token_ttl_s), "token_type": "Bearer"}
    )


@routes.get("/v3/classifieds/{classifiedId}/statuses")
@upstream_endpoint("v3", "classified_statuses")
async def classified_statuses(call: Call) -> web.StreamResponse:
    grant = _authorize(call)
    classified_id = call.request.match_info["classifiedId"]
    query = call.request.query
    latest = _latest_only(query)
    statuses = _enum_values(query, "status", CLASSIFIED_STATUSES)
    portals = _enum_values(query, "portal", PORTALS)
    limit = _limit(query, number=False)
    after = _continuation(query, classified_id=classified_id)
    record = _owned(call, grant, classified_id)
    items = newest_first(record.statuses)
    if statuses:
        items = [s for s in items if s.item.get("status") in statuses]
    if portals:
        items = [s for s in items if _lists_portal(s, portals)]
    if latest:
        items = items[:1]
    return _page(items, limit, after, {"classifiedId": classified_id})


@routes.get("/v3/classifieds/{classifiedId}/media/{mediaId}/statuses")
@upstream_endpoint("v3", "media_statuses")
async def media_statuses(call: Call) -> web.StreamResponse:
    grant = _authorize(call)
    classified_id = call.request.match_info["classifiedId"]
    media_id = call.request.match_info["mediaId"]
    limit = _limit(call.request.query, number=True)
    after = _continuation(call.request.query, classified_id=classified_id, media_id=media_id)
    record = _owned(call, grant, classified_id)
    history = record.media.get(media_id)
    if history is None:
        raise Reject(v3_error(404, f"Media {media_id} not found"))
    extra = {"classifiedId": classified_id, "mediaId": media_id}
    return _page(newest_first(history), limit, after, extra)


@routes.put("/v3/webhooks")
@upstream_endpoint("v3", "webhooks_put")
async def subscribe(call: Call) -> web.StreamResponse:
    grant = _authorize(call)
    try:
        body = json.loads(call.raw or b"null")
    except ValueError:
        raise Reject(v3_error(400, "Invalid format: the body is not valid JSON")) from None
    if not isinstance(body, dict):
        raise Reject(v3_error(400, "Invalid format: the body must be an object"))
    url = body.get("url")
    if not isinstance(url, str) or not _is_http_url(url):
        raise Reject(v3_error(400, "Invalid format: url must be an http(s) URL"))
    statuses = body.get("statuses")
    if statuses is not None and (
        not isinstance(statuses, list) or any(s not in CLASSIFIED_STATUSES for s in statuses)
    ):
        raise Reject(v3_error(400, "Invalid format: statuses must list classified statuses"))
    call.state.subscribe(grant.client_id, grant.intermediary_id, url, statuses)
    return web.json_response("OK")


@routes.delete("/v3/webhooks")
@upstream_endpoint("v3", "webhooks_delete")
async def unsubscribe(call: Call) -> web.StreamResponse:
    grant = _authorize(call)
    call.state.unsubscribe(grant.client_id, grant.intermediary_id)
    return web.json_response("OK")


def _authorize(call: Call) -> TokenGrant:
    headers = call.request.headers
    if not USER_AGENT_PATTERN.match(headers.get("User-Agent", "")):
        raise Reject(v3_error(403, "Forbidden: User-Agent does not match the required pattern"))
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    grant = call.state.grant_for(token) if scheme.lower() == "bearer" else None
    if grant is None:
        raise Reject(
            v3_error(401, "Unauthorized", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        )
    return grant


def _owned(call: Call, grant: TokenGrant, classified_id: str) -> ClassifiedRecord:
    record = call.state.classified(classified_id)
    if record is None:
        raise Reject(v3_error(404, f"Classified {classified_id} not found"))
    if record.tenant != grant.intermediary_id:
        raise Reject(v3_error(403, "Forbidden: the classified belongs to another customer"))
    return record


def _bad_request(message: str) -> Reject:
    return Reject(v3_error(400, message))


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise _bad_request(f"{name} must be given once")
    return values[0] if values else None


def _latest_only(query: MultiMapping[str]) -> bool:
    current = _single(query, "current")
    filter_ = _single(query, "filter")
    if filter_ is not None and filter_ != "latest":
        raise _bad_request("filter must be 'latest'")
    if current is not None and current.lower() not in _TRUE | _FALSE:
        raise _bad_request("current must be true or false")
    return filter_ == "latest" or (current is not None and current.lower() in _TRUE)


def _enum_values(query: MultiMapping[str], name: str, allowed: tuple[str, ...]) -> set[str]:
    values = query.getall(name, [])
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise _bad_request(f"unknown {name} value: {unknown[0]}")
    return set(values)


def _limit(query: MultiMapping[str], *, number: bool) -> int:
    raw = _single(query, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = _integral_number(raw) if number else 0
    if value < 1:
        raise _bad_request("limit must be a positive integer")
    return min(value, MAX_LIMIT)


def _integral_number(raw: str) -> int:
    try:
        value = float(raw)
    except ValueError:
        return 0
    return int(value) if value.is_integer() else 0


def _continuation(
    query: MultiMapping[str], *, classified_id: str, media_id: str | None = None
) -> tuple[Any, str] | None:
    """The sort key after which the page starts, from a `nextToken`; 400 when undecodable."""
    raw = _single(query, "nextToken")
    if raw is None or raw == "":
        return None
    try:
        decoded = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise _bad_request("nextToken is not a valid token") from None
    if (
        not isinstance(decoded, dict)
        or not isinstance(decoded.get("statusId"), str)
        or decoded.get("classifiedId") != classified_id
        or (media_id is not None and decoded.get("mediaId") != media_id)
        or not isinstance(decoded.get("statusDate"), str)
    ):
        raise _bad_request("nextToken is not a valid token for this resource")
    when = parse_status_date(decoded["statusDate"])
    if when == UNDATED and decoded["statusDate"]:
        raise _bad_request("nextToken is not a valid token")
    return (when, decoded["statusId"])


def _page(
    items: list[StoredStatus],
    limit: int,
    after: tuple[Any, str] | None,
    token_extra: dict[str, str],
) -> web.Response:
    if after is not None:
        items = [s for s in items if s.sort_key < after]
    page = items[:limit]
    body: dict[str, Any] = {"items": [s.item for s in page]}
    if len(items) > limit:
        last = page[-1]
        # The item's own statusDate string, so the token round-trips byte for byte; "" for an
        # item whose date is missing or unparseable (it sorts as the oldest).
        raw_date = last.item.get("statusDate")
        token = {
            "statusDate": raw_date if last.date != UNDATED and isinstance(raw_date, str) else "",
            "statusId": last.status_id,
            **token_extra,
        }
        compact = json.dumps(token, separators=(",", ":")).encode()
        body["nextToken"] = base64.b64encode(compact).decode()
    return web.json_response(body)


def _lists_portal(entry: StoredStatus, portals: set[str]) -> bool:
    listed = entry.item.get("portals")
    return isinstance(listed, list) and any(p in portals for p in listed)


def _is_http_url(value: str) -> bool:
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)
