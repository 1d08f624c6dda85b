"""The simulated legacy (GoedGeplaatst) status API, exercised over real HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.simulator import SIM_LEGACY_API_KEY, RunningSimulator
from gateway.simulator.lifecycle import legacy_state_of

USER = 12311


@dataclass
class Legacy:
    """A tiny legacy caller; `headers` replace the default `Authentication` header."""

    http: aiohttp.ClientSession
    running: RunningSimulator

    async def get(self, path: str, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {"Authentication": SIM_LEGACY_API_KEY} if headers is None else headers
        async with self.http.get(self.running.legacy_url + path, headers=sent) as response:
            return response.status, await response.json()

    async def post(self, body: Any, *, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {"Authentication": SIM_LEGACY_API_KEY} if headers is None else headers
        url = self.running.legacy_url + "/status/"
        async with self.http.post(url, json=body, headers=sent) as response:
            return response.status, await response.json()


@pytest.fixture
async def legacy(simulator: RunningSimulator) -> AsyncIterator[Legacy]:
    async with aiohttp.ClientSession() as http:
        yield Legacy(http, simulator)


def ads_of(simulator: RunningSimulator, user_id: int = USER) -> list[int]:
    return simulator.sim.data.legacy_users[user_id]


def assert_failure_envelope(body: Any) -> None:
    assert body["result"] is False and body["data"] == [] and len(body["errors"]) == 1


async def test_get_answers_one_ad_in_the_envelope(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    ad_id = ads_of(simulator)[0]
    status, body = await legacy.get(f"/status/{USER}/{ad_id}")
    assert status == 200
    assert body == {
        "result": True,
        "errors": [],
        "data": [simulator.sim.data.legacy_ads[USER][ad_id]],
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": SIM_LEGACY_API_KEY},
        {"Authorization": f"Bearer {SIM_LEGACY_API_KEY}"},
        {"Authentication": "wrong"},
        {"Authentication": f"Bearer {SIM_LEGACY_API_KEY}"},
    ],
)
async def test_the_key_must_come_in_the_authentication_header(
    legacy: Legacy, simulator: RunningSimulator, headers: dict[str, str]
) -> None:
    ad_id = ads_of(simulator)[0]
    status, body = await legacy.get(f"/status/{USER}/{ad_id}", headers=headers)
    assert status == 401
    assert_failure_envelope(body)
    status, body = await legacy.post({"userId": USER, "adId": ad_id}, headers=headers)
    assert status == 401


async def test_get_of_an_unknown_user_or_ad_is_a_404_envelope(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    status, body = await legacy.get(f"/status/1/{ads_of(simulator)[0]}")
    assert status == 404
    assert_failure_envelope(body)
    status, body = await legacy.get(f"/status/{USER}/1")
    assert status == 404
    assert_failure_envelope(body)
    assert "Advertisement 1 not found for user 12311" in str(body["errors"][0])
    assert (await legacy.get(f"/status/{USER}/abc"))[0] == 400
    assert (await legacy.get("/nope"))[0] == 404


async def test_post_answers_found_ads_in_the_order_asked_and_names_the_missing(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    first, second, third = ads_of(simulator)[:3]
    asked = [third, 659599_0, first, second, first]
    status, body = await legacy.post({"userId": USER, "adId": asked, "force": False})
    assert status == 200 and body["result"] is True
    stored = simulator.sim.data.legacy_ads[USER]
    assert body["data"] == [stored[third], stored[first], stored[second]]
    [error] = body["errors"]
    message = error if isinstance(error, str) else error["message"]
    assert message == f"Advertisement 6595990 not found for user {USER}"
    if not isinstance(error, str):
        assert error["code"] == 404


async def test_post_accepts_a_single_ad_id(legacy: Legacy, simulator: RunningSimulator) -> None:
    ad_id = ads_of(simulator)[4]
    status, body = await legacy.post({"userId": USER, "adId": ad_id})
    assert status == 200 and len(body["data"]) == 1


async def test_post_pages_with_items_per_page(legacy: Legacy, simulator: RunningSimulator) -> None:
    ad_ids = ads_of(simulator)[:25]
    pages = []
    for page in (1, 2, 3, 4):
        body = {"userId": USER, "adId": [*ad_ids, 1], "page": page, "itemsPerPage": 10}
        status, answer = await legacy.post(body)
        assert status == 200 and len(answer["errors"]) == 1
        pages.append(answer["data"])
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    stored = simulator.sim.data.legacy_ads[USER]
    assert [ad for page in pages for ad in page] == [stored[a] for a in ad_ids]


@pytest.mark.parametrize(
    "body",
    [
        {"adId": [659593]},
        {"userId": "12311", "adId": [659593]},
        {"userId": USER},
        {"userId": USER, "adId": []},
        {"userId": USER, "adId": ["659593"]},
        {"userId": USER, "adId": [659593], "itemsPerPage": 1001},
        {"userId": USER, "adId": [659593], "itemsPerPage": 0},
        {"userId": USER, "adId": [659593], "page": 0},
        {"userId": USER, "adId": [659593], "force": "yes"},
        [USER, 659593],
    ],
)
async def test_post_validates_its_body(legacy: Legacy, body: Any) -> None:
    status, answer = await legacy.post(body)
    assert status == 400
    assert_failure_envelope(answer)


async def test_post_for_an_unknown_user_is_a_404_envelope(legacy: Legacy) -> None:
    status, body = await legacy.post({"userId": 1, "adId": [659593]})
    assert status == 404
    assert_failure_envelope(body)


async def test_errors_come_as_objects_or_as_plain_strings(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    kinds = set()
    for missing in range(1, 30):
        _, body = await legacy.post({"userId": USER, "adId": [missing]})
        kinds.add(type(body["errors"][0]))
    assert kinds == {str, dict}
    simulator.sim.state.legacy_error_style = "string"
    _, body = await legacy.post({"userId": USER, "adId": [1, 2]})
    assert all(isinstance(e, str) for e in body["errors"])
    simulator.sim.state.legacy_error_style = "object"
    _, body = await legacy.post({"userId": USER, "adId": [1, 2]})
    assert all(isinstance(e, dict) for e in body["errors"])


async def test_one_request_always_renders_its_errors_the_same_way(legacy: Legacy) -> None:
    answers = [await legacy.post({"userId": USER, "adId": [7]}) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]


async def test_answers_carry_the_documented_quirks(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    data = simulator.sim.data
    string_user, string_ad = min(data.string_ad_ids)
    _, body = await legacy.get(f"/status/{string_user}/{string_ad}")
    assert body["data"][0]["adId"] == str(string_ad)
    _, body = await legacy.post({"userId": USER, "adId": ads_of(simulator)[:7]})
    portals = [p for ad in body["data"] for p in ad["portals"]]
    states = {legacy_state_of(p["publish"]) for p in portals if p["portal"] == "marktplaats"}
    assert states == {"never", "pending", "processing", "error", "online", "offline", "closed"}
    assert any(p["publish"]["remoteAdId"] is False for p in portals)
    assert any(p["publish"]["pendingDate"] == "0000-00-00 00:00:00" for p in portals)
    website = [p for ad in body["data"] for p in ad["portals"] if p["portal"] == "website"]
    assert website and all(p["features"] is False for p in website)


async def test_totals_count_active_and_archived_ads(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    status, body = await legacy.get(f"/status/totals/{USER}/")
    assert status == 200 and body["result"] is True
    data = body["data"]
    assert data["userId"] == USER
    assert data["active"] + data["archive"] == len(ads_of(simulator))
    assert data["active"] > 0 and data["archive"] > 0
    assert (await legacy.get("/status/totals/1/"))[0] == 404
    assert simulator.sim.state.calls("legacy", "status_totals") == 2


async def test_force_is_slower(legacy: Legacy, simulator: RunningSimulator) -> None:
    simulator.sim.state.force_delay_s = 0.2
    started = time.perf_counter()
    status, _ = await legacy.post({"userId": USER, "adId": ads_of(simulator)[0], "force": True})
    assert status == 200 and time.perf_counter() - started >= 0.2


async def test_installed_raw_ads_are_served_verbatim(
    legacy: Legacy, simulator: RunningSimulator
) -> None:
    odd = [{"portal": "speurders", "publish": {"active": True}, "features": None}]
    simulator.sim.state.put_legacy_ad(555, 42, odd)
    status, body = await legacy.get("/status/555/42")
    assert status == 200 and body["data"] == [{"adId": 42, "portals": odd}]
