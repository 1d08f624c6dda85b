"""Legacy answers shared by two replicas (uvicorn apps in this process) through one real
redis-server: one `POST /status/` per chunk for both, per legacy key, and losing Redis
costs sharing, never an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis_harness import RunningRedis
from test_legacy_sharing import ads_of_one_user, fail_first_portal, legacy_states, posts, refs

from gateway.cache.shared_legacy import SharedLegacyStatusCache
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

LISTINGS = """query($refs: [ListingRef!]!) { listings(refs: $refs) { portals { state } } }"""
REFRESH = """mutation($user: Int!, $ad: Int!) {
  refreshListing(ref: {legacy: {userId: $user, adId: $ad}}) { portals { provider state } } }"""


@asynccontextmanager
async def replicas(
    simulator: RunningSimulator, redis: RunningRedis, **overrides: Any
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    shared = {"redis_url": redis.url, "legacy_poll_s": 3600} | overrides
    async with run_gateway(simulator, **shared) as one, run_gateway(simulator, **shared) as two:
        yield one, two


def shared_of(replica: RunningGateway) -> SharedLegacyStatusCache:
    cache = replica.app.state.runtime.service.legacy
    assert isinstance(cache, SharedLegacyStatusCache)
    return cache


async def test_concurrent_requests_on_two_replicas_make_one_post_per_chunk(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    """Three ads in chunks of two, eight requests on each replica: two POSTs in all."""
    async with replicas(simulator, redis_server, legacy_max_batch=2) as (one, two):
        user_id, ad_ids = ads_of_one_user(one, 3)
        one.sim.state.set_latency("legacy", 200)
        answers = await asyncio.gather(
            *(legacy_states(replica, user_id, ad_ids) for replica in (one, two) * 8)
        )
        assert posts(one) == 2
        assert all(answer == answers[0] for answer in answers)
        read_by = [shared_of(replica).shared for replica in (one, two)]
        assert sorted(stats.lock_wins for stats in read_by) == [0, 3]
        assert sum(stats.lock_waits + stats.hits for stats in read_by) >= 3
        assert sum(stats.lock_timeouts for stats in read_by) == 0


async def test_what_one_replica_read_the_other_serves_from_redis(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        user_id, ad_ids = ads_of_one_user(one, 2)
        first = await legacy_states(one, user_id, ad_ids)
        assert await legacy_states(two, user_id, ad_ids) == first
        assert posts(one) == 1
        assert shared_of(two).shared.hits == 2


async def test_a_refresh_replaces_the_entry_in_redis(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        user_id, [ad_id] = ads_of_one_user(one, 1)
        before = await legacy_states(one, user_id, [ad_id])
        fail_first_portal(one, user_id, ad_id)
        refreshed = await one.query(REFRESH, {"user": user_id, "ad": ad_id})
        assert "errors" not in refreshed, refreshed
        after = await legacy_states(two, user_id, [ad_id])  # from Redis
        assert after != before and "FAILED" in {state for _, state in after[0]}
        assert posts(one) == 2  # the first read and the refresh


async def test_a_gateway_with_another_legacy_key_never_gets_an_answer_read_with_this_one(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with run_gateway(simulator, redis_url=redis_server.url) as one:
        user_id, ad_ids = ads_of_one_user(one, 1)
        assert await legacy_states(one, user_id, ad_ids)
        async with run_gateway(
            simulator, redis_url=redis_server.url, legacy_api_key="a-key-the-api-refuses"
        ) as other:
            body = await other.query(LISTINGS, {"refs": refs(user_id, ad_ids)})
            assert body["errors"][0]["extensions"]["upstream"] == "legacy"
            assert shared_of(other).shared.hits == 0
            assert shared_of(other).scope != shared_of(one).scope
        assert posts(one) == 2  # the other key asked the legacy API itself


async def test_with_redis_stopped_requests_are_still_answered_and_shared_in_process(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, _):
        user_id, ad_ids = ads_of_one_user(one, 2)
        await redis_server.stop()
        first = await legacy_states(one, user_id, ad_ids)
        assert all(first)
        assert await legacy_states(one, user_id, ad_ids) == first
        assert posts(one) == 1  # the second request took the in-process entry
        assert shared_of(one).shared.unavailable >= 1
