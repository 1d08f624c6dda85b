"""Legacy answers shared across requests (GATEWAY_LEGACY_CACHE_TTL_S), counted at the real
simulator: concurrent requests share one `POST /status/` per chunk, an answer serves for the
TTL, the poller and `refreshListing` replace it, and a TTL of 0 reads for every request.

Time moves on an injected clock; nothing here sleeps through a TTL."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.app import create_app
from gateway.cache.legacy import LegacyStatusCache
from gateway.domain.models import LegacyAdKey
from gateway.live.poller import LegacyPoller
from gateway.simulator import RunningSimulator
from gateway.upstreams.legacy import LegacyClient

from gateway_harness import LOOPBACK_TLS, RunningGateway, serve_app, settings_for

LISTINGS = """query($refs: [ListingRef!]!) {
  listings(refs: $refs) { legacyAd { userId adId } portals { portal provider state } } }"""
REFRESH = """mutation($user: Int!, $ad: Int!) {
  refreshListing(ref: {legacy: {userId: $user, adId: $ad}}) { portals { portal provider state } } }"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def gateway_at(
    simulator: RunningSimulator, clock: FakeClock, **overrides: Any
) -> AsyncIterator[RunningGateway]:
    """The gateway on `clock` (the legacy cache's TTLs included); legacy polls only when a
    test asks (`poll_once`)."""
    overrides.setdefault("legacy_poll_s", 3600)
    app = create_app(settings_for(simulator, **overrides), clock=clock)
    async with (
        serve_app(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30, verify=LOOPBACK_TLS) as client,
    ):
        yield RunningGateway(url=url, client=client, running_sim=simulator, app=app)


def ads_of_one_user(gw: RunningGateway, count: int) -> tuple[int, list[int]]:
    """A legacy user of the simulator with at least `count` ads, and `count` of them."""
    for user_id, ad_ids in sorted(gw.sim.state.legacy_users().items()):
        if len(ad_ids) >= count:
            return user_id, sorted(ad_ids)[:count]
    raise AssertionError(f"no legacy user with {count} ads")


def refs(user_id: int, ad_ids: list[int]) -> list[dict[str, Any]]:
    return [{"legacy": {"userId": user_id, "adId": ad_id}} for ad_id in ad_ids]


async def legacy_states(gw: RunningGateway, user_id: int, ad_ids: list[int]) -> list[Any]:
    """Per ad, its legacy portals' states as the gateway answers them."""
    body = await gw.query(LISTINGS, {"refs": refs(user_id, ad_ids)})
    assert "errors" not in body, body
    return [
        sorted((p["portal"], p["state"]) for p in listing["portals"] if p["provider"] == "LEGACY")
        for listing in body["data"]["listings"]
    ]


def fail_first_portal(gw: RunningGateway, user_id: int, ad_id: int) -> None:
    """The legacy API now reports the ad's first portal failed (its unified state FAILED)."""
    ad = gw.sim.state.legacy_ad(user_id, ad_id)
    assert ad is not None
    portals = copy.deepcopy(ad["portals"])
    portals[0]["publish"] = {**portals[0]["publish"], "error": True}
    gw.sim.state.replace_legacy_portals(user_id, ad_id, portals)


def posts(gw: RunningGateway) -> int:
    return gw.calls("legacy", "status_post")


def legacy_cache(gw: RunningGateway) -> LegacyStatusCache:
    cache = gw.app.state.runtime.service.legacy
    assert isinstance(cache, LegacyStatusCache)
    return cache


async def test_sixteen_concurrent_requests_for_the_same_ads_make_one_post_per_chunk(
    simulator: RunningSimulator,
) -> None:
    """Three ads in chunks of two: two POSTs for sixteen requests, not thirty-two."""
    async with gateway_at(simulator, FakeClock(), legacy_max_batch=2) as gw:
        user_id, ad_ids = ads_of_one_user(gw, 3)
        cache = legacy_cache(gw)
        # The first read is held until all sixteen requests have asked the cache, however
        # slowly a loaded machine lets them arrive: each asks once, and has joined a read or
        # started one before its first pause, so the gate opens just after the sixteenth.
        everyone_asked = asyncio.Event()
        asked = 0
        statuses, reader = cache.statuses, cache.reader

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal asked
            asked += 1
            if asked == 16:
                asyncio.get_running_loop().call_soon(everyone_asked.set)
            return statuses(*args, **kwargs)

        class HeldReader:
            async def ads_status(self, *args: Any, **kwargs: Any) -> Any:
                await everyone_asked.wait()
                return await reader.ads_status(*args, **kwargs)

        cache.statuses = counted  # type: ignore[method-assign]
        cache.reader = HeldReader()  # type: ignore[assignment]
        answers = await asyncio.gather(*(legacy_states(gw, user_id, ad_ids) for _ in range(16)))
        assert asked == 16
        assert posts(gw) == 2
        assert all(answer == answers[0] for answer in answers)
        assert all(states for states in answers[0])
        assert (cache.stats.reads, cache.stats.misses) == (1, 3)
        assert cache.stats.coalesced == 15 * 3  # all joined the read in flight
        assert cache.stats.hits == 0


async def test_an_answer_serves_for_the_ttl_then_one_read_renews_it(
    simulator: RunningSimulator,
) -> None:
    clock = FakeClock()
    async with gateway_at(simulator, clock, legacy_cache_ttl_s=5) as gw:
        user_id, ad_ids = ads_of_one_user(gw, 2)
        first = await legacy_states(gw, user_id, ad_ids)
        assert posts(gw) == 1

        fail_first_portal(gw, user_id, ad_ids[0])  # not seen while the answer is fresh
        clock.now += 4.9
        assert await legacy_states(gw, user_id, ad_ids) == first
        assert posts(gw) == 1

        clock.now += 0.2  # past the TTL
        renewed = await legacy_states(gw, user_id, ad_ids)
        assert posts(gw) == 2
        assert "FAILED" in {state for _, state in renewed[0]}
        assert renewed[1] == first[1]


async def test_a_ttl_of_zero_reads_for_every_request_as_before(
    simulator: RunningSimulator,
) -> None:
    async with gateway_at(simulator, FakeClock(), legacy_cache_ttl_s=0) as gw:
        user_id, ad_ids = ads_of_one_user(gw, 2)
        await legacy_states(gw, user_id, ad_ids)
        await legacy_states(gw, user_id, ad_ids)
        assert posts(gw) == 2
        gw.sim.state.set_latency("legacy", 50)
        await asyncio.gather(*(legacy_states(gw, user_id, ad_ids) for _ in range(4)))
        assert posts(gw) == 6
        assert len(legacy_cache(gw)) == 0


async def test_a_refresh_reads_anew_and_its_answer_serves_the_next_requests(
    simulator: RunningSimulator,
) -> None:
    async with gateway_at(simulator, FakeClock()) as gw:
        user_id, [ad_id] = ads_of_one_user(gw, 1)
        before = await legacy_states(gw, user_id, [ad_id])
        fail_first_portal(gw, user_id, ad_id)
        assert await legacy_states(gw, user_id, [ad_id]) == before  # kept
        assert posts(gw) == 1

        refreshed = await gw.query(REFRESH, {"user": user_id, "ad": ad_id})
        assert "errors" not in refreshed, refreshed
        portals = refreshed["data"]["refreshListing"]["portals"]
        assert "FAILED" in {p["state"] for p in portals if p["provider"] == "LEGACY"}
        assert posts(gw) == 2
        assert gw.sim.state.requests[-1].body["force"] is True

        after = await legacy_states(gw, user_id, [ad_id])
        assert after != before and "FAILED" in {state for _, state in after[0]}
        assert posts(gw) == 2  # the refreshed answer, no read of its own


async def test_what_the_poller_reads_serves_requests_without_reads_of_their_own(
    simulator: RunningSimulator,
) -> None:
    async with gateway_at(simulator, FakeClock()) as gw:
        user_id, ad_ids = ads_of_one_user(gw, 2)
        runtime = gw.app.state.runtime
        poller: LegacyPoller = runtime.poller
        runtime.changes.watches.watch([LegacyAdKey(user_id, ad_id) for ad_id in ad_ids])
        await poller.baseline()
        fail_first_portal(gw, user_id, ad_ids[0])
        gw.sim.state.reset_counters()

        await poller.poll_once()
        assert posts(gw) == 1
        states = await legacy_states(gw, user_id, ad_ids)
        assert "FAILED" in {state for _, state in states[0]}  # the poll's answer
        assert posts(gw) == 1


async def test_a_failed_read_is_not_kept(simulator: RunningSimulator) -> None:
    async with gateway_at(simulator, FakeClock(), upstream_retries=0) as gw:
        user_id, [ad_id] = ads_of_one_user(gw, 1)
        gw.sim.state.add_fault("legacy", "error", status=503, count=1)
        body = await gw.query(LISTINGS, {"refs": refs(user_id, [ad_id])})
        assert body["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert await legacy_states(gw, user_id, [ad_id])  # read again, answered
        assert posts(gw) == 2


async def test_an_ad_the_legacy_api_does_not_know_is_kept_as_missing(
    simulator: RunningSimulator,
) -> None:
    async with gateway_at(simulator, FakeClock()) as gw:
        user_id, [ad_id] = ads_of_one_user(gw, 1)
        unknown = max(gw.sim.state.legacy_users()[user_id]) + 1000
        for _ in range(2):
            body = await gw.query(LISTINGS, {"refs": refs(user_id, [ad_id, unknown])})
            [error] = body["errors"]
            assert error["path"][:2] == ["listings", 1]
            assert error["extensions"]["code"] == "NOT_FOUND"
            assert body["data"]["listings"][0]["portals"]
        assert posts(gw) == 1


def test_the_cache_scope_names_the_key_and_url_without_showing_the_key() -> None:
    """Answers are shared per legacy key: another key or another API is another scope."""

    def scope(url: str, key: str) -> str:
        client = LegacyClient(None, url, key, timeout_s=1, max_batch=10)  # type: ignore[arg-type]
        return client.scope

    one = scope("http://legacy.test/rest/v1", "key-one")
    assert one == scope("http://legacy.test/rest/v1", "key-one")
    assert one != scope("http://legacy.test/rest/v1", "key-two")
    assert one != scope("http://other.test/rest/v1", "key-one")
    assert "key-one" not in one
