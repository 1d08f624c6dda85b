"""Listing changes across two replicas (uvicorn apps in this process) on one redis-server and
one simulator: a client resumes on the other replica, one replica per legacy user polls, and
the poll moves when that replica dies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis_harness import RunningRedis
from test_listing_changes import (
    CHANGED,
    HOUR,
    event,
    feed_of,
    listing_of,
    poller_of,
    ref,
    set_legacy,
    subscribed,
)
from test_live_status import LEGACY_WS, TRANSPORT_WS, UNTIL_SAFETY_S, append, connect, until

from gateway.live.redis_changelog import RedisChangeLog
from gateway.live.redis_poller import RedisPollShare
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

SECRET = "scaleout-changes-secret"


@asynccontextmanager
async def replicas(
    simulator: RunningSimulator, redis: RunningRedis, **overrides: Any
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    """Replica 1 (V3's webhooks reach it) and replica 2, one Redis, following the change log."""
    shared = {"redis_url": redis.url, "webhook_secret": SECRET, "legacy_poll_s": HOUR}
    shared |= overrides
    async with (
        run_gateway(simulator, public=True, webhook_subscribe=True, **shared) as one,
        run_gateway(simulator, **shared) as two,
    ):
        for replica in (one, two):
            await log_of(replica).following.wait()
        yield one, two


def log_of(replica: RunningGateway) -> RedisChangeLog:
    log = feed_of(replica).log
    assert isinstance(log, RedisChangeLog)
    return log


def share_of(replica: RunningGateway) -> RedisPollShare:
    share = poller_of(replica).share
    assert isinstance(share, RedisPollShare)
    return share


async def test_a_client_resumes_on_the_other_replica(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        classified_id = listing_of(one)[0]
        variables: dict[str, Any] = {"refs": [{"classifiedId": classified_id}]}
        async with connect(one, TRANSPORT_WS) as subscriber:
            await subscribed(one, subscriber, variables)
            await append(one, classified_id, "DELETING")
            seen = await event(subscriber)

        await append(one, classified_id, "DELETED")  # missed
        await feed_of(one).settled()
        async with connect(two, LEGACY_WS) as subscriber:
            await subscribed(two, subscriber, variables | {"after": seen["cursor"]})
            missed = await event(subscriber)
            assert missed["provider"] == "CLASSIFIEDS_V3"
            assert missed["listing"]["classifiedId"] == classified_id
            # Live on replica 2 too: the webhook reaches replica 1, the stream both.
            await append(one, classified_id, "UPDATING")
            live = await event(subscriber)
            assert len({seen["cursor"], missed["cursor"], live["cursor"]}) == 3
        assert feed_of(two).stats.replayed == 1
        assert log_of(one).shared.sent == 3
        assert log_of(two).shared.received == log_of(one).shared.received == 3


async def test_one_replica_polls_each_legacy_user_for_both(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        listing = listing_of(one, 4)
        _, user_id, ad_id = listing
        variables: dict[str, Any] = {"refs": [ref(listing)]}
        async with connect(one, TRANSPORT_WS) as on_one, connect(two, TRANSPORT_WS) as on_two:
            await subscribed(one, on_one, variables)
            await subscribed(two, on_two, variables)
            assert poller_of(two).stats.baselines == 0  # replica 1 took the first snapshot
            one.sim.state.reset_counters()
            for _ in range(3):
                await poller_of(one).poll_once()
                await poller_of(two).poll_once()
            assert one.calls("legacy", "status_post") == 3  # one per round, not one per replica
            assert (share_of(one).held, share_of(two).held) == ({user_id}, set())

            portal, _ = await set_legacy(one, user_id, ad_id)
            await poller_of(two).poll_once()  # not its turn
            await poller_of(one).poll_once()
            for subscriber in (on_one, on_two):
                change = await event(subscriber)
                assert (change["provider"], change["changedPortals"]) == ("LEGACY", [portal])
            # The polled answer travelled with the change: replica 2 read no legacy either.
            assert one.calls("legacy") == 4


async def test_the_poll_moves_when_the_replica_holding_it_dies(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server, legacy_poll_s=0.05) as (one, two):
        listing = listing_of(one, 5)
        user_id = listing[1]
        variables: dict[str, Any] = {"refs": [ref(listing)]}
        async with connect(one, TRANSPORT_WS) as on_one, connect(two, TRANSPORT_WS) as on_two:
            await on_one.start(CHANGED, variables)
            await on_two.start(CHANGED, variables)
            await until(lambda: user_id in share_of(one).held | share_of(two).held)
            holder, other = (one, two) if user_id in share_of(one).held else (two, one)
            # The holder stops without a word (no release), as a killed process would.
            task = poller_of(holder)._task
            assert task is not None
            task.cancel()
            # Only a hang reaches the bound: then the poller did not end when cancelled.
            async with asyncio.timeout(UNTIL_SAFETY_S):
                await asyncio.gather(task, return_exceptions=True)
            # Its lease runs out (three intervals); the other replica takes the user over.
            await until(lambda: user_id in share_of(other).held)
            polls = poller_of(other).stats.polls
            await until(lambda: poller_of(other).stats.polls > polls)


async def test_without_redis_a_change_stays_with_the_replica_that_saw_it(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        classified_id = listing_of(one, 8)[0]
        variables: dict[str, Any] = {"refs": [{"classifiedId": classified_id}]}
        await redis_server.stop()
        async with connect(one, TRANSPORT_WS) as subscriber:
            await subscribed(one, subscriber, variables)
            await append(one, classified_id, "DELETING")
            seen = await event(subscriber)  # delivered on this replica, without Redis
        await append(one, classified_id, "DELETED")
        await feed_of(one).settled()
        assert log_of(one).shared.alone == 2

        # Its cursor resumes here; the other replica never saw those changes.
        async with connect(one, TRANSPORT_WS) as subscriber:
            await subscribed(one, subscriber, variables | {"after": seen["cursor"]})
            assert (await event(subscriber))["provider"] == "CLASSIFIEDS_V3"
        async with connect(two, TRANSPORT_WS) as subscriber:
            await subscriber.start(CHANGED, variables | {"after": seen["cursor"]})
            message = await subscriber.ws.receive_json()
        (error,) = message["payload"]["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "reason": "cursor_expired"}


async def a_change_seen_on(replica: RunningGateway) -> dict[str, Any]:
    """A client watches a classified on `replica`, sees one change of it and leaves; the
    variables that resume after that change."""
    classified_id = listing_of(replica, 8)[0]
    variables: dict[str, Any] = {"refs": [{"classifiedId": classified_id}]}
    async with connect(replica, TRANSPORT_WS) as subscriber:
        await subscribed(replica, subscriber, variables)
        await append(replica, classified_id, "DELETING")
        seen = await event(subscriber)
    await feed_of(replica).settled()
    return variables | {"after": seen["cursor"]}


async def test_a_client_that_resumes_and_leaves_ends_its_subscription(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    """It leaves while its subscription reads the shared log (a Redis call that may swallow
    the cancellation): the subscription ends all the same, and the replica can stop."""
    async with replicas(simulator, redis_server) as (one, two):
        resume = await a_change_seen_on(one)
        feed = feed_of(two)
        async with connect(two, TRANSPORT_WS) as subscriber:
            await subscribed(two, subscriber, resume)
        await feed.membership.until(lambda: not feed.subscribers)


async def test_a_cursor_whose_own_change_left_the_shared_log_is_expired(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    """Nothing after it is gone, but the client was away longer than the retention: a legacy
    change to its ads then may have gone unlogged, so it is told to reload."""
    async with replicas(simulator, redis_server) as (one, two):
        resume = await a_change_seen_on(one)
        async with connect(two, TRANSPORT_WS) as subscriber:
            await subscribed(two, subscriber, resume)  # kept: nothing to replay, no error

        # The change leaves the stream, as past the retention (Redis trims by its own clock).
        log = log_of(one)
        async with redis_server.client() as client:
            [(newest, _)] = await client.xrevrange(log.stream, count=1)
            number = int(newest.decode().split("-")[0])
            await client.xtrim(log.stream, minid=f"{number + 1}-0")
            assert await client.xlen(log.stream) == 0
        async with connect(two, TRANSPORT_WS) as subscriber:
            await subscriber.start(CHANGED, resume)
            message = await subscriber.ws.receive_json()
        (error,) = message["payload"]["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "reason": "cursor_expired"}
