"""The legacy (GoedGeplaatst) client: the `Authentication` header, batching (dedupe, chunks in
parallel, one call per fully answered chunk, paging), the envelope, failure kinds, force, and
the lenient parsing of docs/upstreams.md. Against the simulator, plus a loopback app for payloads
the simulator does not produce."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.domain.errors import (
    InvalidInput,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.domain.models import Portal, PublicationState
from gateway.domain.state import legacy_portal_states
from gateway.simulator import SIM_LEGACY_API_KEY, RunningSimulator
from gateway.upstreams import UNKNOWN_VALUES, LegacyClient, create_session
from gateway.upstreams.legacy import AMSTERDAM, parse_ad, parse_legacy_date
from gateway.upstreams.wire import Pool

from gateway_harness import NO_PAUSE

NO_DATE = "0000-00-00 00:00:00"

# The vendor's documented example ad (docs/upstreams.md, "Ad status"), verbatim.
MARKTPLAATS = {
    "portal": "marktplaats",
    "publish": {
        "pending": False, "pendingDate": NO_DATE, "processing": False, "processingDate": NO_DATE,
        "error": False, "active": True, "online": True,
        "startDate": "2021-06-24 11:50:12", "closeDate": "2021-08-24 11:50:12",
        "remoteAdId": 1234567890,
    },
    "features": [
        {"feature": "omhoogplaatsen", "pending": True, "pendingDate": "2021-06-24 11:45:57",
         "processing": False, "processingDate": NO_DATE, "error": False, "active": False,
         "startDate": NO_DATE},
    ],
}  # fmt: skip
WEBSITE = {
    "portal": "website",
    "publish": {
        "pending": False, "pendingDate": NO_DATE, "processing": False, "processingDate": NO_DATE,
        "error": False, "active": False, "online": False, "startDate": NO_DATE, "remoteAdId": 0,
    },
    "features": False,
}  # fmt: skip


@pytest.fixture
async def session() -> AsyncIterator[Pool]:
    async with create_session(timeout_s=3) as s:
        yield s


def legacy_client(
    simulator: RunningSimulator,
    session: Pool,
    *,
    max_batch: int = 100,
    timeout_s: float = 5.0,  # generous: a busy machine must not turn a retry into a failure
    key: str = SIM_LEGACY_API_KEY,
) -> LegacyClient:
    return LegacyClient(
        session, simulator.legacy_url, key, timeout_s, max_batch, retry_policy=NO_PAUSE
    )


@pytest.fixture
def legacy(simulator: RunningSimulator, session: Pool) -> LegacyClient:
    return legacy_client(simulator, session)


def posts(simulator: RunningSimulator) -> list[Any]:
    return [r for r in simulator.sim.state.requests if r.endpoint == "status_post"]


def install(simulator: RunningSimulator, user_id: int, count: int, first: int = 1) -> list[int]:
    ids = list(range(first, first + count))
    for ad_id in ids:
        simulator.sim.state.put_legacy_ad(user_id, ad_id, [WEBSITE])
    return ids


# --- a loopback app answering whatever the test wants ----------------------------------------

Answer = Callable[[dict[str, Any] | None], Any]


class Fake:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.paths: list[str] = []


@pytest.fixture
async def fake(
    session: Pool,
) -> AsyncIterator[Callable[[Answer], Awaitable[tuple[LegacyClient, Fake]]]]:
    servers: list[TestServer] = []

    async def start(answer: Answer, status: int = 200) -> tuple[LegacyClient, Fake]:
        fake_state = Fake()

        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.json() if request.method == "POST" else None
            fake_state.bodies.append(body)
            fake_state.paths.append(request.path)
            return web.json_response(answer(body), status=status)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        client = LegacyClient(session, str(server.make_url("/rest/v1")), "k3y", 1.0, 100)
        return client, fake_state

    yield start
    for server in servers:
        await server.close()


def ok(data: Any, errors: list[Any] | None = None) -> dict[str, Any]:
    return {"result": True, "errors": errors or [], "data": data}


# --- headers and the vendor example ------------------------------------------------------------


async def test_key_travels_in_the_authentication_header(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    user_id, ads = next(iter(simulator.sim.state.legacy_users().items()))
    await legacy.ad_status(user_id, ads[0])
    await legacy.ads_status(user_id, ads[:3])
    requests = simulator.sim.state.requests
    assert [r.endpoint for r in requests] == ["status_get", "status_post"]
    for request in requests:
        assert request.headers["Authentication"] == SIM_LEGACY_API_KEY
        assert "Authorization" not in request.headers
    assert requests[0].path == f"/legacy/rest/v1/status/{user_id}/{ads[0]}"
    assert requests[1].path == "/legacy/rest/v1/status/"
    assert requests[1].body == {
        "userId": user_id, "adId": ads[:3], "force": False, "page": 1, "itemsPerPage": 3,
    }  # fmt: skip


async def test_vendor_example_parses(simulator: RunningSimulator, legacy: LegacyClient) -> None:
    simulator.sim.state.put_legacy_ad(12311, 659593, [MARKTPLAATS, WEBSITE])
    ad = await legacy.ad_status(12311, 659593)
    assert (ad.user_id, ad.ad_id) == (12311, 659593)
    marktplaats, website = ad.portals
    assert (marktplaats.portal, marktplaats.raw_portal) == (Portal.MARKTPLAATS, "marktplaats")
    publish = marktplaats.publish
    assert (publish.active, publish.online, publish.error, publish.pending) == (
        True,
        True,
        False,
        False,
    )
    assert publish.pending_date is None and publish.processing_date is None
    assert publish.start_date == datetime(2021, 6, 24, 11, 50, 12, tzinfo=AMSTERDAM)
    assert publish.start_date.utcoffset() == timedelta(hours=2)  # type: ignore[union-attr]
    assert publish.close_date == datetime(2021, 8, 24, 11, 50, 12, tzinfo=AMSTERDAM)
    assert publish.remote_ad_id == 1234567890
    (feature,) = marktplaats.features
    assert feature.feature == "omhoogplaatsen" and feature.known
    assert feature.pending and feature.pending_date == datetime(
        2021, 6, 24, 11, 45, 57, tzinfo=AMSTERDAM
    )
    assert not feature.processing and feature.processing_date is None
    assert feature.start_date is None
    assert website.portal is Portal.WEBSITE
    assert website.features == ()
    assert website.publish.remote_ad_id is None, "remoteAdId 0 means none"
    assert website.publish.close_date is None, "closeDate absent"
    assert website.publish.start_date is None


async def test_same_ad_via_get_and_post_is_equal(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    simulator.sim.state.put_legacy_ad(12311, 659593, [MARKTPLAATS, WEBSITE])
    single = await legacy.ad_status(12311, 659593)
    batch = await legacy.ads_status(12311, [659593])
    assert batch.found == {659593: single}
    assert batch.missing == frozenset()


# --- batching ----------------------------------------------------------------------------------


async def test_150_ads_of_two_users_cost_three_calls(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    first = install(simulator, 90001, 130)
    second = install(simulator, 90002, 20, first=500)
    simulator.sim.state.reset_counters()
    a, b = await asyncio.gather(legacy.ads_status(90001, first), legacy.ads_status(90002, second))
    assert simulator.sim.state.calls("legacy") == 3
    assert sorted(a.found) == first and sorted(b.found) == second
    assert a.missing == b.missing == frozenset()
    chunks = sorted(
        (r.body["userId"], len(r.body["adId"]), r.body["itemsPerPage"], r.body["page"])
        for r in posts(simulator)
    )
    assert chunks == [(90001, 30, 30, 1), (90001, 100, 100, 1), (90002, 20, 20, 1)]


async def test_chunks_go_in_parallel(session: Pool) -> None:
    """No chunk is answered before all five have arrived: sent one after another, the
    first would wait for the rest until its deadline."""
    arrived: list[list[int]] = []
    all_in = asyncio.Event()

    async def barrier(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        arrived.append(body["adId"])
        if len(arrived) == 5:
            all_in.set()
        await all_in.wait()
        data = [{"adId": ad_id, "portals": [WEBSITE]} for ad_id in body["adId"]]
        return web.json_response(ok(data))

    app = web.Application()
    app.router.add_post("/rest/v1/status/", barrier)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        client = LegacyClient(session, str(server.make_url("/rest/v1")), "k3y", 5.0, 10)
        batch = await client.ads_status(90003, list(range(1, 51)))
    finally:
        await server.close()
    assert len(batch.found) == 50
    assert sorted(len(chunk) for chunk in arrived) == [10] * 5


async def test_max_batch_is_capped_at_1000(simulator: RunningSimulator, session: Pool) -> None:
    ids = install(simulator, 90004, 1005)
    client = legacy_client(simulator, session, max_batch=5000)
    batch = await client.ads_status(90004, ids)
    assert len(batch.found) == 1005
    sizes = sorted(len(r.body["adId"]) for r in posts(simulator))
    assert sizes == [5, 1000]
    assert all(r.body["itemsPerPage"] <= 1000 for r in posts(simulator))


async def test_duplicates_are_sent_once(simulator: RunningSimulator, legacy: LegacyClient) -> None:
    ids = install(simulator, 90005, 3)
    batch = await legacy.ads_status(90005, [ids[1], ids[0], ids[1], ids[2], ids[0]])
    (request,) = posts(simulator)
    assert request.body["adId"] == [ids[1], ids[0], ids[2]]
    assert set(batch.found) == set(ids)


@pytest.mark.parametrize("style", ["object", "string", "mixed"])
async def test_unknown_ads_are_missing_not_a_failure(
    simulator: RunningSimulator, legacy: LegacyClient, style: Any
) -> None:
    simulator.sim.state.legacy_error_style = style
    ids = install(simulator, 90006, 4)
    batch = await legacy.ads_status(90006, [*ids, 777_777, 888_888])
    assert set(batch.found) == set(ids)
    assert batch.missing == frozenset({777_777, 888_888})
    assert simulator.sim.state.calls("legacy") == 1, "a short page ends the chunk"


async def test_no_ads_means_no_call(simulator: RunningSimulator, legacy: LegacyClient) -> None:
    batch = await legacy.ads_status(90007, [])
    assert (batch.user_id, batch.found, batch.missing) == (90007, {}, frozenset())
    assert simulator.sim.state.calls("legacy") == 0


async def test_paging_within_a_chunk(fake: Any) -> None:
    """A full page that still lacks requested ads asks for the next page."""

    def answer(body: dict[str, Any] | None) -> Any:
        assert body is not None
        if body["page"] == 1:  # a full page, but with an ad nobody asked for
            return ok(
                [
                    {"adId": 1, "portals": []},
                    {"adId": 99, "portals": []},
                    {"adId": 2, "portals": []},
                ]
            )
        return ok([{"adId": 3, "portals": []}])

    client, state = await fake(answer)
    batch = await client.ads_status(7, [1, 2, 3])
    assert set(batch.found) == {1, 2, 3} and batch.missing == frozenset()
    assert [(b["page"], b["itemsPerPage"]) for b in state.bodies] == [(1, 3), (2, 3)]


async def test_paging_stops_when_a_page_adds_nothing(fake: Any) -> None:
    """An upstream that ignores `page` cannot loop the client forever."""
    client, state = await fake(lambda body: ok([{"adId": n, "portals": []} for n in (1, 2, 50)]))
    batch = await client.ads_status(7, [1, 2, 3])
    assert batch.missing == frozenset({3})
    assert len(state.bodies) == 2


# --- failures ----------------------------------------------------------------------------------


async def test_unknown_ad_is_not_found(simulator: RunningSimulator, legacy: LegacyClient) -> None:
    user_id, _ = next(iter(simulator.sim.state.legacy_users().items()))
    with pytest.raises(UpstreamNotFound) as caught:
        await legacy.ad_status(user_id, 999_999_999)
    assert caught.value.upstream == "legacy"
    assert caught.value.code == "NOT_FOUND"


async def test_unknown_user_is_not_found(simulator: RunningSimulator, legacy: LegacyClient) -> None:
    with pytest.raises(UpstreamNotFound):
        await legacy.ad_status(4242, 1)
    with pytest.raises(UpstreamNotFound):
        await legacy.ads_status(4242, [1, 2])


async def test_wrong_key_is_rejected_without_leaking_it(
    simulator: RunningSimulator, session: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = legacy_client(simulator, session, key="WRONG-key-123")
    with pytest.raises(UpstreamRejected) as caught:
        await client.ads_status(12311, [1])
    assert caught.value.status == 401
    assert "legacy" in str(caught.value) and "status_post" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), repr(client), caplog.text):
        assert "WRONG-key-123" not in text
    assert simulator.sim.state.calls("legacy") == 1


async def test_5xx_is_retried_then_unavailable(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    ids = install(simulator, 90008, 2)
    simulator.sim.state.add_fault("legacy", "error", status=503)
    with pytest.raises(UpstreamUnavailable) as caught:
        await legacy.ads_status(90008, ids)
    assert caught.value.status == 503
    assert simulator.sim.state.calls("legacy") == 3


async def test_one_failure_is_retried(simulator: RunningSimulator, legacy: LegacyClient) -> None:
    ids = install(simulator, 90009, 2)
    simulator.sim.state.add_fault("legacy", "error", status=500, count=1)
    batch = await legacy.ads_status(90009, ids)
    assert set(batch.found) == set(ids)
    assert simulator.sim.state.calls("legacy") == 2


async def test_one_failing_chunk_fails_the_whole_call(
    simulator: RunningSimulator, session: Pool
) -> None:
    ids = install(simulator, 90010, 20)
    simulator.sim.state.add_fault("legacy", "error", status=400)
    with pytest.raises(UpstreamRejected):
        await legacy_client(simulator, session, max_batch=10).ads_status(90010, ids)


async def test_truncated_body_is_unavailable(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    simulator.sim.state.add_fault("legacy", "malformed")
    with pytest.raises(UpstreamUnavailable, match="malformed"):
        await legacy.ads_status(12311, [1])


async def test_hang_is_cut_at_the_deadline(simulator: RunningSimulator, session: Pool) -> None:
    legacy = legacy_client(simulator, session, timeout_s=0.4)
    simulator.sim.state.add_fault("legacy", "timeout", delay_s=3600)
    with pytest.raises(UpstreamUnavailable) as caught:
        await legacy.ad_status(12311, 1)  # ends only because the deadline cuts the hang
    assert isinstance(caught.value.__cause__, TimeoutError)  # the deadline, not an answer


@pytest.mark.parametrize(
    ("errors", "expected", "status"),
    [
        ([{"code": 404, "message": "User 7 not found"}], UpstreamNotFound, 404),
        ([{"code": 404, "message": "Advertisement 9 not found"}], UpstreamNotFound, 404),
        ([{"code": 400, "message": "Advertisement 1 not found"}], UpstreamRejected, 400),
        ([{"code": 500, "message": "database down"}], UpstreamUnavailable, None),
        ([{"code": 403, "message": "not your ad"}], UpstreamRejected, 403),
        ([{"code": 429, "message": "slow down"}], UpstreamUnavailable, 429),
        # An ad not found beside another refusal: the call failed, not only that ad.
        (
            [
                {"code": 404, "message": "Advertisement 2 not found"},
                {"code": 400, "message": "itemsPerPage: invalid value"},
            ],
            UpstreamRejected,
            400,
        ),
        (
            [
                {"code": 404, "message": "Advertisement 2 not found"},
                {"code": 429, "message": "slow down"},
            ],
            UpstreamUnavailable,
            429,
        ),
        (["something went wrong"], UpstreamRejected, None),
        ([], UpstreamRejected, None),
    ],
)
async def test_result_false_fails_the_whole_call(
    fake: Any, errors: list[Any], expected: type[Exception], status: int | None
) -> None:
    client, _ = await fake(lambda body: {"result": False, "errors": errors, "data": []})
    with pytest.raises(expected) as caught:
        await client.ads_status(7, [1, 2])
    assert caught.value.status == status  # type: ignore[attr-defined]
    for error in errors:
        text = error if isinstance(error, str) else error["message"]
        assert text not in str(caught.value), "upstream text stays out of the message"


@pytest.mark.parametrize("style", ["object", "string"])
async def test_result_false_naming_missing_ads_asks_once_more_for_the_rest(
    simulator: RunningSimulator, legacy: LegacyClient, style: Any
) -> None:
    state = simulator.sim.state
    state.legacy_missing_ads = "refuse"
    state.legacy_error_style = style
    ids = install(simulator, 90020, 4)
    batch = await legacy.ads_status(90020, [ids[0], 777_777, *ids[1:], 888_888])
    assert set(batch.found) == set(ids)
    assert batch.missing == frozenset({777_777, 888_888})
    first, second = (request.body["adId"] for request in posts(simulator))
    assert first == [ids[0], 777_777, *ids[1:], 888_888]
    assert second == ids


async def test_missing_ads_cost_one_extra_call_per_chunk(
    simulator: RunningSimulator, session: Pool
) -> None:
    simulator.sim.state.legacy_missing_ads = "refuse"
    ids = install(simulator, 90021, 6)
    legacy = legacy_client(simulator, session, max_batch=4)
    batch = await legacy.ads_status(90021, [*ids[:3], 777_777, *ids[3:], 888_888])
    assert set(batch.found) == set(ids)
    assert batch.missing == frozenset({777_777, 888_888})
    assert simulator.sim.state.calls("legacy", "status_post") == 4


async def test_only_missing_ads_cost_one_call(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    simulator.sim.state.legacy_missing_ads = "refuse"
    install(simulator, 90022, 1)
    batch = await legacy.ads_status(90022, [777_777, 888_888])
    assert (batch.found, batch.missing) == ({}, frozenset({777_777, 888_888}))
    assert simulator.sim.state.calls("legacy") == 1


async def test_a_second_refusal_fails_the_chunk(fake: Any) -> None:
    named = iter([[{"code": 404, "message": "Advertisement 1 not found for user 7"}],
                  ["Advertisement 2 not found for user 7"]])  # fmt: skip
    client, calls = await fake(lambda body: {"result": False, "errors": next(named), "data": []})
    with pytest.raises(UpstreamUnavailable, match="refused again"):
        await client.ads_status(7, [1, 2, 3])
    assert [body["adId"] for body in calls.bodies] == [[1, 2, 3], [2, 3]]


async def test_a_refusal_naming_an_ad_and_something_else_fails_the_whole_call(fake: Any) -> None:
    errors = [{"code": 404, "message": "Advertisement 1 not found"}, {"code": 500, "message": "x"}]
    client, calls = await fake(lambda body: {"result": False, "errors": errors, "data": []})
    with pytest.raises(UpstreamUnavailable):
        await client.ads_status(7, [1, 2])
    assert len(calls.bodies) == 1


@pytest.mark.parametrize("body", [[], "OK", {"errors": [], "data": []}, None])
async def test_bad_envelopes_are_unavailable(fake: Any, body: Any) -> None:
    client, _ = await fake(lambda _: body)
    with pytest.raises(UpstreamUnavailable, match="malformed"):
        await client.ad_status(7, 1)


@pytest.mark.parametrize("bad", [0, -1, True, "12", 1.0, None])
async def test_bad_ids_are_invalid_input_before_any_call(
    simulator: RunningSimulator, legacy: LegacyClient, bad: Any
) -> None:
    with pytest.raises(InvalidInput):
        await legacy.ad_status(bad, 1)
    with pytest.raises(InvalidInput):
        await legacy.ad_status(12311, bad)
    with pytest.raises(InvalidInput):
        await legacy.ads_status(bad, [1])
    with pytest.raises(InvalidInput):
        await legacy.ads_status(12311, [1, bad])
    assert simulator.sim.state.calls("legacy") == 0


# --- force -------------------------------------------------------------------------------------


async def test_force_is_sent_and_gets_a_longer_deadline(
    simulator: RunningSimulator, session: Pool
) -> None:
    legacy = legacy_client(simulator, session, timeout_s=0.5)
    *ids, unforced = install(simulator, 90011, 3)
    # Slower than any attempt a 0.5 s budget allows, well within three times that.
    simulator.sim.state.set_latency("legacy", 350)
    with pytest.raises(UpstreamUnavailable):
        await legacy.ad_status(90011, unforced)
    ad = await legacy.ad_status(90011, ids[0], force=True)
    assert ad.ad_id == ids[0]
    batch = await legacy.ads_status(90011, ids, force=True)
    assert set(batch.found) == set(ids)
    assert [r.body["force"] for r in posts(simulator)] == [True, True]
    # An attempt of the unforced read may reach the simulator late; it names another ad.
    gets = [r.path for r in simulator.sim.state.requests if r.endpoint == "status_get"]
    assert all(path.endswith(f"/{unforced}") for path in gets), "force is only documented on POST"


async def test_forced_single_ad_not_found(
    simulator: RunningSimulator, legacy: LegacyClient
) -> None:
    install(simulator, 90012, 1)
    with pytest.raises(UpstreamNotFound):
        await legacy.ad_status(90012, 5555, force=True)


# --- lenient parsing (docs/upstreams.md) -----------------------------------------------------------


async def test_loose_payloads_parse(fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.upstreams")
    before = (
        UNKNOWN_VALUES[("legacy.portal", "immoweb")],
        UNKNOWN_VALUES[("legacy.feature", "superboost")],
    )
    data = [
        {"adId": "659594", "portals": [
            {"portal": "Marktplaats",
             "publish": {"pending": "1", "error": 0, "active": "true", "online": 1,
                         "remoteAdId": "123", "startDate": "2021-13-45 99:99:99",
                         "closeDate": "", "pendingDate": None, "processingDate": "0000-00-00"},
             "features": [{"feature": "superboost", "processing": True,
                           "processingDate": "2024-01-15 08:00:00"},
                          {"pending": True}, "junk"]},
            {"portal": "immoweb", "publish": {"remoteAdId": False}, "features": None},
            {"portal": "tweedehands", "features": []},
            {"portal": "website", "publish": {"remoteAdId": ""}},
            "not-a-portal",
        ]},
        {"adId": False, "portals": []},
        {"adId": "2", "portals": False},
    ]  # fmt: skip
    client, _ = await fake(lambda _: ok(data))
    batch = await client.ads_status(7, [659594, 2])
    assert batch.missing == frozenset()
    ad = batch.found[659594]
    marktplaats, immoweb, tweedehands, website = ad.portals
    assert marktplaats.portal is Portal.MARKTPLAATS
    publish = marktplaats.publish
    assert (publish.pending, publish.error, publish.active, publish.online) == (
        True,
        False,
        True,
        True,
    )
    assert publish.remote_ad_id == 123
    assert publish.start_date is None, "an unparseable date is None, not a crash"
    assert "2021-13-45 99:99:99" in caplog.text, "... and logged"
    assert (
        publish.close_date is None
        and publish.pending_date is None
        and publish.processing_date is None
    )
    (feature,) = marktplaats.features
    assert feature.feature == "superboost" and not feature.known
    assert feature.processing and feature.processing_date == datetime(
        2024, 1, 15, 8, 0, tzinfo=AMSTERDAM
    )
    assert feature.processing_date.utcoffset() == timedelta(hours=1)  # type: ignore[union-attr]
    assert (immoweb.portal, immoweb.raw_portal) == (None, "immoweb")
    assert immoweb.publish.remote_ad_id is None and immoweb.features == ()
    assert tweedehands.portal is Portal.TWEEDEHANDS
    assert tweedehands.publish.active is False and tweedehands.publish.remote_ad_id is None
    assert website.publish.remote_ad_id is None
    assert batch.found[2].portals == ()
    after = (
        UNKNOWN_VALUES[("legacy.portal", "immoweb")],
        UNKNOWN_VALUES[("legacy.feature", "superboost")],
    )
    assert after == (before[0] + 1, before[1] + 1)


async def test_single_ad_answer_as_an_object(fake: Any) -> None:
    client, state = await fake(lambda _: ok({"adId": 5, "portals": [WEBSITE]}))
    ad = await client.ad_status(9, 5)
    assert ad.portals[0].portal is Portal.WEBSITE
    assert state.paths == ["/rest/v1/status/9/5"]


async def test_get_answer_without_the_ad_is_not_found(fake: Any) -> None:
    client, _ = await fake(lambda _: ok([], errors=["Advertisement 5 not found"]))
    with pytest.raises(UpstreamNotFound):
        await client.ad_status(9, 5)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (NO_DATE, None),
        ("0000-00-00", None),
        ("0000-00-00 00:00:00.000", None),
        ("", None),
        (None, None),
        (False, None),
        (0, None),
        ("not a date", None),
        ("2021-02-30 10:00:00", None),
        ("2021-06-24 11:50:12", datetime(2021, 6, 24, 11, 50, 12, tzinfo=AMSTERDAM)),
        ("2021-06-24T11:50:12", datetime(2021, 6, 24, 11, 50, 12, tzinfo=AMSTERDAM)),
        (" 2024-01-15 08:00:00 ", datetime(2024, 1, 15, 8, 0, tzinfo=AMSTERDAM)),
        ("2021-08-24 24:00:00", None),
        # Other ISO 8601 forms are dates the upstream set, not "not set".
        ("2021-08-24 11:50:12.250", datetime(2021, 8, 24, 11, 50, 12, 250000, tzinfo=AMSTERDAM)),
        ("2021-08-24", datetime(2021, 8, 24, tzinfo=AMSTERDAM)),
        ("2021-08-24T11:50:12+02:00", datetime(2021, 8, 24, 9, 50, 12, tzinfo=UTC)),
        ("2021-08-24T11:50:12Z", datetime(2021, 8, 24, 11, 50, 12, tzinfo=UTC)),
        ("12345", None),
    ],
)
def test_legacy_dates(raw: object, expected: datetime | None) -> None:
    parsed = parse_legacy_date(raw)
    assert parsed == expected
    if parsed is not None and isinstance(raw, str) and raw.strip()[19:] in ("", ".250"):
        assert parsed.tzinfo is AMSTERDAM  # no zone named: Amsterdam time, not an offset


def test_an_offline_ad_whose_close_date_has_another_form_stays_offline() -> None:
    for close_date in ("2021-08-24 11:50:12", "2021-08-24 11:50:12.000", "2021-08-24"):
        ad = parse_ad(7, {"adId": 1, "portals": [{"portal": "marktplaats",
                      "publish": {"active": False, "online": False, "closeDate": close_date}}]})  # fmt: skip
        assert ad is not None
        assert legacy_portal_states(ad)[0].state is PublicationState.OFFLINE, close_date


def test_legacy_dates_follow_amsterdam_daylight_saving() -> None:
    summer = parse_legacy_date("2024-07-01 12:00:00")
    winter = parse_legacy_date("2024-01-01 12:00:00")
    assert summer is not None and winter is not None
    assert summer.utcoffset() == timedelta(hours=2)
    assert winter.utcoffset() == timedelta(hours=1)


def test_a_remembered_parse_keeps_a_key_of_its_entry_s_size() -> None:
    # orjson's bytes keep the whole buffer they were written into (4 KB or more); the parses
    # remembered (thousands) must each keep a key no larger than the entry it stands for.
    from gateway.upstreams import legacy

    entry = {
        "adId": 987654321,
        "portals": [{"portal": "marktplaats", "publish": {"online": True, "remoteAdId": 5}}],
    }
    tracemalloc.start()
    try:
        ad = legacy._parse_ad_cached(4242, entry)
        [key] = [key for user_id, key in legacy._PARSED if user_id == 4242]
        where = tracemalloc.get_object_traceback(key)
        kept = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert ad is not None and ad.ad_id == 987654321
    assert legacy._parse_ad_cached(4242, dict(entry)) is ad  # remembered
    assert key == orjson.dumps(entry)
    # The key and the tuple holding it were made on one line.
    assert where is not None
    assert sum(trace.size for trace in kept.traces if trace.traceback == where) < len(key) + 128


def test_a_remote_ad_id_that_is_no_integer_is_counted_not_dropped_unseen() -> None:
    def remote_id(value: object) -> object:
        portal = {"portal": "marktplaats", "publish": {"active": True, "remoteAdId": value}}
        ad = parse_ad(1, {"adId": 2, "portals": [portal]})
        assert ad is not None
        return ad.portals[0].publish.remote_ad_id

    counted = dict(UNKNOWN_VALUES)
    assert [remote_id(value) for value in (0, "0", "", False, None, " 42 ", 7.0)] == [
        None, None, None, None, None, 42, 7,
    ]  # fmt: skip
    assert dict(UNKNOWN_VALUES) == counted, "none of these is unknown"
    text = ("legacy.remote_ad_id", "not an integer (str)")
    number = ("legacy.remote_ad_id", "not an integer (float)")
    assert [remote_id(value) for value in ("m-77", "m-78", 1.5)] == [None, None, None]
    # Counted by kind, not by value: every ad has its own id.
    assert UNKNOWN_VALUES[text] == counted.get(text, 0) + 2
    assert UNKNOWN_VALUES[number] == counted.get(number, 0) + 1
