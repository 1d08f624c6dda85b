"""The `/_sim` control routes: JSON, no auth, for the demo and for curl.

They inspect the catalog and counters, inject faults and latency, revoke tokens, append
statuses and move the demo's listings one step (both fire webhooks), and set a legacy ad's
publish state on one portal (the legacy API has no webhooks: pollers see it). Errors answer 400/404 with `{"error": "<reason>"}`. Header
and token values never appear in these answers, and webhook URLs show only their origin: a
subscriber's path may hold its secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

from aiohttp import web
from yarl import URL

from .bulk import add_listings
from .faults import Fault
from .lifecycle import LegacyState, publish_object, verb_of
from .mover import Mover
from .pipeline import STATE_KEY
from .records import JsonDict, format_status_date
from .state import DeliveryResult, State
from .vocabulary import classified_message, sub_status_for

PREFIX = "/_sim"
MOVER_KEY = web.AppKey("simulator_mover", Mover)

routes = web.RouteTableDef()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"null")
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "the body is not valid JSON"}),
            content_type="application/json",
        ) from None


@routes.get(PREFIX + "/catalog")
async def catalog(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    tenants: dict[str, list[JsonDict]] = {}
    for tenant, ids in state.tenants().items():
        entries = tenants.setdefault(tenant, [])
        for classified_id in ids:
            record = state.classified(classified_id)
            if record is not None:
                entries.append(
                    {
                        "classifiedId": classified_id,
                        "statuses": len(record.statuses),
                        "media": list(record.media),
                    }
                )
    return web.json_response(
        {
            "tenants": tenants,
            "legacyUsers": {str(u): ads for u, ads in state.legacy_users().items()},
            "listings": [
                {"classifiedId": c, "tenant": _tenant(state, c), "userId": u, "adId": a}
                for c, u, a in state.listings
            ],
        }
    )


@routes.post(PREFIX + "/listings")
async def bulk_listings(request: web.Request) -> web.StreamResponse:
    """Add `count` listings of `tenant` (default agency-1) over `users` new legacy users."""
    body = await _body(request)
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    count: Any = body.get("count")
    users: Any = body.get("users", 1)
    tenant = body.get("tenant", "agency-1")
    if any(isinstance(n, bool) or not isinstance(n, int) for n in (count, users)):
        return _error(400, "count and users must be integers")
    state = request.app[STATE_KEY]
    if not isinstance(tenant, str) or tenant not in state.tenants():
        return _error(404, f"unknown tenant {tenant}")
    try:
        added = add_listings(state, count=count, users=users, tenant=tenant)
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response(
        {
            "listings": [
                {"classifiedId": c, "tenant": tenant, "userId": u, "adId": a} for c, u, a in added
            ]
        }
    )


def _tenant(state: State, classified_id: str) -> str | None:
    record = state.classified(classified_id)
    return record.tenant if record is not None else None


@routes.get(PREFIX + "/counters")
async def counters(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[STATE_KEY].counters())


@routes.post(PREFIX + "/counters/reset")
async def reset_counters(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].reset_counters()
    return web.json_response({"ok": True})


@routes.get(PREFIX + "/faults")
async def list_faults(request: web.Request) -> web.StreamResponse:
    return web.json_response({"faults": [f.to_json() for f in request.app[STATE_KEY].faults]})


@routes.post(PREFIX + "/faults")
async def add_fault(request: web.Request) -> web.StreamResponse:
    try:
        fault = Fault.from_json(await _body(request))
    except ValueError as exc:
        return _error(400, str(exc))
    state = request.app[STATE_KEY]
    state.add_fault_object(fault)
    return web.json_response({"faults": [f.to_json() for f in state.faults]})


@routes.delete(PREFIX + "/faults")
async def clear_faults(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].clear_faults()
    return web.json_response({"faults": []})


@routes.post(PREFIX + "/latency")
async def set_latency(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    ms = body.get("ms")
    if isinstance(ms, bool) or not isinstance(ms, int | float):
        return _error(400, "ms must be a number")
    try:
        request.app[STATE_KEY].set_latency(str(body.get("upstream")), ms)
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response({"upstream": body["upstream"], "ms": ms})


@routes.post(PREFIX + "/tokens/revoke")
async def revoke_tokens(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].revoke_tokens()
    return web.json_response({"ok": True})


@routes.get(PREFIX + "/webhooks")
async def webhooks(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "subscriptions": [
                {
                    "clientId": s.client_id,
                    "intermediaryId": s.intermediary_id,
                    "url": _masked(s.url),
                    "statuses": list(s.statuses) if s.statuses else None,
                }
                for s in state.subscriptions
            ],
            "deliveries": [_delivery(d) for d in state.deliveries],
        }
    )


@routes.post(PREFIX + "/classifieds/{classifiedId}/statuses")
async def append_status(request: web.Request) -> web.StreamResponse:
    """Append a status; a partial body is completed from the latest item.

    Only `status` is needed: `statusDate` defaults to now (kept after the latest item),
    `portals` to the latest item's, `message` to the vendor wording, and `subStatus` follows the
    verb of the latest item (or `verb` in the body: POST, PUT, PATCH, DELETE).
    """
    state = request.app[STATE_KEY]
    classified_id = request.match_info["classifiedId"]
    record = state.classified(classified_id)
    if record is None:
        return _error(404, f"unknown classified {classified_id}")
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return _error(400, "body must be an object with a string status")
    latest = record.latest()
    verb = body.pop("verb", None) or (verb_of(latest.item) if latest else None) or "PUT"
    item: JsonDict = {"portals": latest.item.get("portals", ["SL"]) if latest else ["SL"]}
    item["status"] = body["status"]
    sub_status = sub_status_for(body["status"], str(verb))
    if sub_status is not None:
        item["subStatus"] = sub_status
    item["message"] = classified_message(body["status"], str(verb))
    when = datetime.now(UTC)
    if latest is not None and latest.date >= when:
        when = latest.date + timedelta(milliseconds=1)
    item["statusDate"] = format_status_date(when)
    item.update(body)
    deliveries = await state.append_status(classified_id, item)
    return web.json_response({"item": item, "deliveries": [_delivery(d) for d in deliveries]})


_AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_LEGACY_STATES: tuple[str, ...] = get_args(LegacyState)


@routes.post(PREFIX + "/legacy/{userId}/{adId}")
async def set_legacy_state(request: web.Request) -> web.StreamResponse:
    """Put one portal of a legacy ad in a publish state, dated now (Amsterdam wall time).

    Body: `{"portal": "marktplaats", "state": "online"}`; states: never, pending,
    processing, error, online, offline, closed. The portal's features stay as they are.
    """
    state = request.app[STATE_KEY]
    try:
        user_id, ad_id = int(request.match_info["userId"]), int(request.match_info["adId"])
    except ValueError:
        return _error(400, "userId and adId must be integers")
    ad = state.legacy_ad(user_id, ad_id)
    if ad is None:
        return _error(404, f"unknown legacy ad {user_id}:{ad_id}")
    body = await _body(request)
    if not isinstance(body, dict) or body.get("state") not in _LEGACY_STATES:
        return _error(400, f"body must be an object with a state among {', '.join(_LEGACY_STATES)}")
    portals = [dict(p) for p in ad.get("portals", []) if isinstance(p, dict)]
    entry = next((p for p in portals if p.get("portal") == body.get("portal")), None)
    if entry is None:
        return _error(404, f"legacy ad {user_id}:{ad_id} is not on portal {body.get('portal')}")
    raw = entry.get("publish")
    publish: dict[str, Any] = raw if isinstance(raw, dict) else {}
    remote = publish.get("remoteAdId")
    has_remote = isinstance(remote, int) and not isinstance(remote, bool) and remote > 0
    now = datetime.now(_AMSTERDAM).replace(tzinfo=None, microsecond=0)
    entry["publish"] = publish_object(
        body["state"],
        now,
        remote_ad_id=int(remote) if has_remote and remote is not None else 1_000_000_000 + ad_id,
        no_remote_id=False if remote is False else 0,
        close_date="closeDate" in publish or body["state"] in ("online", "offline", "closed"),
    )
    state.replace_legacy_portals(user_id, ad_id, portals)
    return web.json_response(state.legacy_ad(user_id, ad_id))


@routes.post(PREFIX + "/move")
async def move(request: web.Request) -> web.StreamResponse:
    """Advance a few listings one step now, as the demo's mover does on its timer."""
    deliveries = await request.app[MOVER_KEY].tick()
    return web.json_response({"deliveries": [_delivery(d) for d in deliveries]})


def _masked(url: str) -> str:
    parsed = URL(url)
    return str(parsed.origin()) + "/…" if parsed.absolute else "…"


def _delivery(result: DeliveryResult) -> JsonDict:
    return {**result.to_json(), "url": _masked(result.url)}
