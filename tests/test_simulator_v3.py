"""The simulated V3 API and its token endpoint, exercised over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.simulator import (
    SIM_AUDIENCE,
    SIM_CLIENT_ID,
    SIM_CLIENT_SECRET,
    RunningSimulator,
)
from gateway.simulator.vocabulary import SIM_SANDBOX_AUDIENCE

UA = "SimTest/1.0 aiohttp/3.11 linux/6.1"

Params = list[tuple[str, str]] | dict[str, str] | None


def token_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "client_id": SIM_CLIENT_ID,
        "client_secret": SIM_CLIENT_SECRET,
        "grant_type": "client_credentials",
        "audience": SIM_AUDIENCE,
        "intermediary_id": "agency-1",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


@dataclass
class V3:
    """A tiny V3 caller bound to one tenant's token."""

    http: aiohttp.ClientSession
    running: RunningSimulator
    token: str

    async def get(
        self, path: str, params: Params = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"User-Agent": UA, "Authorization": f"Bearer {self.token}"}
        sent.update(headers or {})
        async with self.http.get(self.running.v3_url + path, params=params, headers=sent) as r:
            return r.status, await r.json()

    async def all_pages(self, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            status, body = await self.get(
                path, [*params, *([("nextToken", token)] if token else [])]
            )
            assert status == 200, body
            items += body["items"]
            token = body.get("nextToken")
            if not token:
                return items


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def fetch_token(http: aiohttp.ClientSession, running: RunningSimulator, tenant: str) -> str:
    async with http.post(running.token_url, json=token_body(intermediary_id=tenant)) as response:
        assert response.status == 200
        return str((await response.json())["access_token"])


@pytest.fixture
async def v3(http: aiohttp.ClientSession, simulator: RunningSimulator) -> V3:
    return V3(http, simulator, await fetch_token(http, simulator, "agency-1"))


def history(simulator: RunningSimulator, classified_id: str) -> list[dict[str, Any]]:
    record = simulator.sim.state.classified(classified_id)
    assert record is not None
    return [e.item for e in sorted(record.statuses, key=lambda e: e.sort_key, reverse=True)]


# --- token endpoint -----------------------------------------------------------------------


async def test_token_endpoint_issues_a_bearer_token(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    async with http.post(simulator.token_url, json=token_body()) as response:
        body = await response.json()
    assert response.status == 200
    assert body["expires_in"] == 86400 and body["token_type"] == "Bearer"
    assert body["access_token"].count(".") == 2
    assert simulator.sim.state.calls("token", "token") == 1


async def test_token_endpoint_accepts_the_sandbox_audience(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    async with http.post(
        simulator.token_url, json=token_body(audience=SIM_SANDBOX_AUDIENCE)
    ) as response:
        assert response.status == 200


async def test_token_endpoint_refuses_a_form_body(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    async with http.post(simulator.token_url, data=token_body()) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"
    recorded = simulator.sim.state.requests[-1]
    assert recorded.body["client_secret"] == "<redacted>"


@pytest.mark.parametrize(
    "missing", ["client_id", "client_secret", "grant_type", "audience", "intermediary_id"]
)
async def test_token_endpoint_requires_all_five_fields(
    http: aiohttp.ClientSession, simulator: RunningSimulator, missing: str
) -> None:
    async with http.post(simulator.token_url, json=token_body(**{missing: None})) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"audience": "https://api.aviv-group.com/caas/v4"}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
async def test_token_endpoint_rejects_bad_credentials_and_audiences(
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
    overrides: dict[str, str],
    status: int,
    error: str,
) -> None:
    async with http.post(simulator.token_url, json=token_body(**overrides)) as response:
        assert response.status == status
        body = await response.json()
    assert body["error"] == error
    assert SIM_CLIENT_SECRET not in json.dumps(body)


# --- edge checks: User-Agent, bearer token, tenant --------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        "",
        "MyGateway/1.0",
        "MyGateway/1.0 aiohttp/3.11",
        "MyGateway/1.0  aiohttp/3.11 linux/6.1",
        "MyGateway/1.0 aiohttp/3.11 linux/6.1 extra/1",
        "My/Gateway/1.0 aiohttp/3.11 linux/6.1",
        "MyGateway 1.0 aiohttp/3.11 linux/6.1",
    ],
)
async def test_v3_refuses_a_user_agent_off_the_pattern(
    v3: V3, simulator: RunningSimulator, user_agent: str
) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    status, body = await v3.get(
        f"/classifieds/{classified_id}/statuses", headers={"User-Agent": user_agent}
    )
    assert status == 403 and "User-Agent" in body["message"]


async def test_v3_accepts_the_documented_user_agent_example(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    status, _ = await v3.get(
        f"/classifieds/{classified_id}/statuses",
        headers={"User-Agent": "MyAwesomeSoft/1.0.0 curl/7.52.1 debian/9~1.gbpf8534c"},
    )
    assert status == 200


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer not-a-token", "Basic x"])
async def test_v3_requires_an_issued_bearer_token(
    http: aiohttp.ClientSession, simulator: RunningSimulator, authorization: str | None
) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    headers = {"User-Agent": UA}
    if authorization is not None:
        headers["Authorization"] = authorization
    url = f"{simulator.v3_url}/classifieds/{classified_id}/statuses"
    async with http.get(url, headers=headers) as response:
        assert response.status == 401
        assert "message" in await response.json()


async def test_revoked_tokens_fail_until_a_new_one_is_fetched(
    v3: V3, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    path = f"/classifieds/{simulator.sim.data.tenants['agency-1'][1]}/statuses"
    assert (await v3.get(path))[0] == 200
    simulator.sim.state.revoke_tokens()
    assert (await v3.get(path))[0] == 401
    v3.token = await fetch_token(http, simulator, "agency-1")
    assert (await v3.get(path))[0] == 200


async def test_tokens_expire_after_their_lifetime(v3: V3, simulator: RunningSimulator) -> None:
    simulator.sim.state.token_ttl_s = 0.05
    v3.token = simulator.sim.state.issue_token("agency-1")
    path = f"/classifieds/{simulator.sim.data.tenants['agency-1'][1]}/statuses"
    assert (await v3.get(path))[0] == 200
    await asyncio.sleep(0.1)
    assert (await v3.get(path))[0] == 401


async def test_a_tenant_cannot_read_another_tenants_classified(
    v3: V3, simulator: RunningSimulator
) -> None:
    data = simulator.sim.data
    foreign = data.tenants["agency-2"][1]
    status, body = await v3.get(f"/classifieds/{foreign}/statuses")
    assert status == 403 and body["message"]
    media_owner = next(c for c in data.tenants["agency-2"] if data.media_of(c))
    media_id = data.media_of(media_owner)[0]
    assert (await v3.get(f"/classifieds/{media_owner}/media/{media_id}/statuses"))[0] == 403


async def test_unknown_classifieds_and_media_are_404(v3: V3, simulator: RunningSimulator) -> None:
    status, body = await v3.get("/classifieds/00000000-0000-4000-8000-000000000000/statuses")
    assert status == 404 and body["message"]
    own = simulator.sim.data.tenants["agency-1"][1]
    assert (await v3.get(f"/classifieds/{own}/media/nope/statuses"))[0] == 404
    assert (await v3.get("/no/such/route"))[0] == 404


# --- classified statuses --------------------------------------------------------------------


async def test_statuses_come_newest_first_with_the_default_limit(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id = simulator.sim.data.multi_page[0]
    status, body = await v3.get(f"/classifieds/{classified_id}/statuses")
    assert status == 200
    assert body["items"] == history(simulator, classified_id)[:20]
    assert body["nextToken"]


async def test_pagination_reaches_the_end_without_duplicates_or_gaps(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id = simulator.sim.data.multi_page[0]
    items = await v3.all_pages(f"/classifieds/{classified_id}/statuses", [("limit", "100")])
    expected = history(simulator, classified_id)
    assert len(expected) > 200
    assert items == expected


async def test_small_pages_of_a_short_history_join_up(v3: V3, simulator: RunningSimulator) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    items = await v3.all_pages(f"/classifieds/{classified_id}/statuses", [("limit", "3")])
    assert items == history(simulator, classified_id)


async def test_next_token_is_base64_json_naming_the_last_item(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id = simulator.sim.data.multi_page[0]  # position 0: items carry statusId
    _, body = await v3.get(f"/classifieds/{classified_id}/statuses", {"limit": "5"})
    decoded = json.loads(base64.b64decode(body["nextToken"], validate=True))
    last = body["items"][-1]
    assert decoded == {
        "statusDate": last["statusDate"],
        "statusId": last["statusId"],
        "classifiedId": classified_id,
    }


async def test_the_last_page_has_no_next_token_and_empty_histories_are_empty(
    v3: V3, simulator: RunningSimulator
) -> None:
    data = simulator.sim.data
    empty = next(c for c in data.empty if data.tenant_of(c) == "agency-1")
    status, body = await v3.get(f"/classifieds/{empty}/statuses")
    assert (status, body) == (200, {"items": []})
    short = data.tenants["agency-1"][1]
    _, body = await v3.get(f"/classifieds/{short}/statuses", {"limit": "100"})
    assert "nextToken" not in body


async def test_limit_above_100_answers_at_most_100_items(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id = simulator.sim.data.multi_page[0]
    _, body = await v3.get(f"/classifieds/{classified_id}/statuses", {"limit": "1000"})
    assert len(body["items"]) == 100 and body["nextToken"]


async def test_status_filter_takes_repeated_keys(v3: V3, simulator: RunningSimulator) -> None:
    classified_id = simulator.sim.data.multi_page[0]
    params = [("status", "CREATED"), ("status", "UPDATED"), ("limit", "100")]
    items = await v3.all_pages(f"/classifieds/{classified_id}/statuses", params)
    expected = [
        i for i in history(simulator, classified_id) if i["status"] in ("CREATED", "UPDATED")
    ]
    assert items == expected and items


async def test_portal_filter_keeps_items_listing_any_asked_portal(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id = simulator.sim.data.multi_page[0]
    params = [("portal", "SL"), ("portal", "BD"), ("limit", "100")]
    items = await v3.all_pages(f"/classifieds/{classified_id}/statuses", params)
    full = history(simulator, classified_id)
    expected = [i for i in full if {"SL", "BD"} & set(i["portals"])]
    assert items == expected and 0 < len(items) < len(full)


@pytest.mark.parametrize("params", [{"filter": "latest"}, {"current": "true"}, {"current": "1"}])
async def test_latest_answers_the_item_with_the_greatest_status_date(
    v3: V3, simulator: RunningSimulator, params: dict[str, str]
) -> None:
    classified_id = simulator.sim.data.multi_page[1]
    _, body = await v3.get(f"/classifieds/{classified_id}/statuses", params)
    newest = max(history(simulator, classified_id), key=lambda i: i["statusDate"])
    assert body == {"items": [newest]}


async def test_latest_applies_after_the_status_filter(v3: V3, simulator: RunningSimulator) -> None:
    classified_id = simulator.sim.data.multi_page[1]
    params = [("filter", "latest"), ("status", "RECEIVED")]
    _, body = await v3.get(f"/classifieds/{classified_id}/statuses", params)
    received = [i for i in history(simulator, classified_id) if i["status"] == "RECEIVED"]
    assert body == {"items": [received[0]]}


async def test_current_false_answers_the_whole_history(v3: V3, simulator: RunningSimulator) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    _, body = await v3.get(f"/classifieds/{classified_id}/statuses", {"current": "false"})
    assert body["items"] == history(simulator, classified_id)[:20]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "1.5"},
        {"status": "PUBLISHED"},
        {"status": "CREATED,UPDATED"},
        {"portal": "XX"},
        {"filter": "first"},
        {"current": "maybe"},
        {"nextToken": "not base64!"},
        {"nextToken": base64.b64encode(b"[1, 2]").decode()},
    ],
)
async def test_bad_query_params_are_400(
    v3: V3, simulator: RunningSimulator, params: dict[str, str]
) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    status, body = await v3.get(f"/classifieds/{classified_id}/statuses", params)
    assert status == 400 and body["message"]


async def test_a_next_token_of_another_classified_is_400(
    v3: V3, simulator: RunningSimulator
) -> None:
    first, second = simulator.sim.data.multi_page[0], simulator.sim.data.tenants["agency-1"][1]
    _, body = await v3.get(f"/classifieds/{first}/statuses", {"limit": "5"})
    status, _ = await v3.get(f"/classifieds/{second}/statuses", {"nextToken": body["nextToken"]})
    assert status == 400


async def test_internal_variant_fields_show_on_some_classifieds_only(
    v3: V3, simulator: RunningSimulator
) -> None:
    internal, documented = simulator.sim.data.tenants["agency-1"][3:5]
    _, with_fields = await v3.get(f"/classifieds/{internal}/statuses")
    _, without = await v3.get(f"/classifieds/{documented}/statuses")
    assert all("statusId" in item and "revision" in item for item in with_fields["items"])
    assert not any("statusId" in item for item in without["items"])


async def test_installed_raw_histories_are_served_verbatim_newest_first(
    v3: V3, simulator: RunningSimulator
) -> None:
    odd = {"status": "TELEPORTED", "message": "?", "statusDate": "2024-01-02T00:00:00.000Z"}
    old = {
        "portals": ["SL"],
        "status": "CREATED",
        "message": "ok",
        "statusDate": "2024-01-01T00:00:00.000Z",
    }
    simulator.sim.state.put_classified("raw-1", tenant="agency-1", items=[old, odd])
    _, body = await v3.get("/classifieds/raw-1/statuses")
    assert body == {"items": [odd, old]}


async def test_raw_items_without_dates_or_portals_still_page_and_filter(
    v3: V3, simulator: RunningSimulator
) -> None:
    items = [
        {"status": "CREATED", "message": "no date", "portals": "SL"},
        {"status": "UPDATED", "message": "dated", "statusDate": "2024-01-01T00:00:00.000Z"},
        {"status": "UPDATED", "message": "also undated", "portals": ["SL"]},
    ]
    simulator.sim.state.put_classified("raw-2", tenant="agency-1", items=items)
    paged = await v3.all_pages("/classifieds/raw-2/statuses", [("limit", "1")])
    assert paged[0] == items[1] and sorted(map(str, paged)) == sorted(map(str, items))
    _, body = await v3.get("/classifieds/raw-2/statuses", {"portal": "SL"})
    assert body == {"items": [items[2]]}


async def test_an_encoded_classified_id_reaches_the_route(
    v3: V3, simulator: RunningSimulator
) -> None:
    simulator.sim.state.put_classified("a b", tenant="agency-1", items=[])
    url = URL(f"{simulator.v3_url}/classifieds/a%20b/statuses", encoded=True)
    headers = {"User-Agent": UA, "Authorization": f"Bearer {v3.token}"}
    async with v3.http.get(url, headers=headers) as response:
        assert response.status == 200
    assert simulator.sim.state.requests[-1].path == "/v3/classifieds/a%20b/statuses"


# --- media statuses -------------------------------------------------------------------------


def a_media(simulator: RunningSimulator, tenant: str = "agency-1") -> tuple[str, str]:
    """The (classifiedId, mediaId) of the tenant's longest media history."""
    data = simulator.sim.data
    candidates = [
        (len(history), classified_id, media_id)
        for classified_id in data.tenants[tenant]
        for media_id, history in data.classifieds[classified_id].media.items()
    ]
    _, classified_id, media_id = max(candidates)
    return classified_id, media_id


async def test_media_statuses_page_through_with_a_single_portal(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id, media_id = a_media(simulator)
    path = f"/classifieds/{classified_id}/media/{media_id}/statuses"
    items = await v3.all_pages(path, [("limit", "2")])
    record = simulator.sim.state.classified(classified_id)
    assert record is not None
    stored = sorted(record.media[media_id], key=lambda e: e.sort_key, reverse=True)
    assert items == [e.item for e in stored] and len(items) > 2
    assert all(isinstance(item["portal"], str) and "portals" not in item for item in items)


async def test_media_limit_takes_a_number_and_ignores_status_filters(
    v3: V3, simulator: RunningSimulator
) -> None:
    classified_id, media_id = a_media(simulator)
    path = f"/classifieds/{classified_id}/media/{media_id}/statuses"
    status, body = await v3.get(path, {"limit": "2.0", "status": "CREATED"})
    assert status == 200 and len(body["items"]) == 2
    for bad in ({"limit": "abc"}, {"limit": "0"}, {"nextToken": "%%%"}):
        assert (await v3.get(path, bad))[0] == 400


# --- webhooks -------------------------------------------------------------------------------


async def put_webhook(v3: V3, body: Any) -> tuple[int, Any]:
    headers = {"User-Agent": UA, "Authorization": f"Bearer {v3.token}"}
    async with v3.http.put(f"{v3.running.v3_url}/webhooks", json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_webhook_put_answers_a_bare_ok_string_and_replaces_the_subscription(
    v3: V3, simulator: RunningSimulator
) -> None:
    assert await put_webhook(v3, {"url": "http://127.0.0.1:9/a"}) == (200, "OK")
    assert await put_webhook(v3, {"url": "https://127.0.0.1:9/b", "statuses": ["CREATED"]}) == (
        200,
        "OK",
    )
    [subscription] = simulator.sim.state.subscriptions
    assert subscription.url == "https://127.0.0.1:9/b" and subscription.statuses == ("CREATED",)
    assert subscription.intermediary_id == "agency-1"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": "not a url"},
        {"url": "ftp://127.0.0.1/x"},
        {"url": 5},
        {"url": "http://127.0.0.1/x", "statuses": ["DOWNLOADED"]},
        {"url": "http://127.0.0.1/x", "statuses": "CREATED"},
        ["http://127.0.0.1/x"],
    ],
)
async def test_webhook_put_validates_its_body(v3: V3, body: Any) -> None:
    status, answer = await put_webhook(v3, body)
    assert status == 400 and answer["message"]


async def test_webhook_delete_answers_ok_and_unsubscribes(
    v3: V3, simulator: RunningSimulator
) -> None:
    await put_webhook(v3, {"url": "http://127.0.0.1:9/a"})
    headers = {"User-Agent": UA, "Authorization": f"Bearer {v3.token}"}
    async with v3.http.delete(f"{simulator.v3_url}/webhooks", headers=headers) as response:
        assert (response.status, await response.json()) == (200, "OK")
    assert simulator.sim.state.subscriptions == []
    assert simulator.sim.state.calls("v3", "webhooks_delete") == 1
