"""Two gateway replicas (uvicorn apps in this process) sharing one redis-server and one
simulator: the V3 page cache, webhook events and V3 tokens are shared, tenants stay apart,
and losing Redis costs sharing, never an answer."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_harness import RunningRedis

from gateway.app import create_app, server_options
from gateway.cache.shared import SharedPageCache
from gateway.infra.redis_link import RedisDown, RedisLink
from gateway.live.redis_bus import RedisEventBus
from gateway.simulator import RunningSimulator

from gateway_harness import (
    LOOPBACK_TLS,
    RunningGateway,
    run_gateway,
    serve_app,
    serve_env,
    settings_for,
)

SECRET = "scaleout-secret"
LATEST = """
query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { id status } } } }"""


@asynccontextmanager
async def replicas(
    simulator: RunningSimulator,
    redis: RunningRedis,
    first: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    """Replica 1 (reachable by the simulator's webhooks) and replica 2, one Redis."""
    shared = {"redis_url": redis.url, "webhook_secret": SECRET} | overrides
    async with (
        run_gateway(simulator, public=True, **shared | (first or {})) as one,
        run_gateway(simulator, **shared) as two,
    ):
        for replica in (one, two):
            await bus_of(replica).listening.wait()
        yield one, two


def bus_of(replica: RunningGateway) -> RedisEventBus:
    bus = replica.app.state.runtime.events
    assert isinstance(bus, RedisEventBus)
    return bus


def cache_of(replica: RunningGateway) -> SharedPageCache:
    cache = replica.app.state.runtime.service.cache
    assert isinstance(cache, SharedPageCache)
    return cache


def link_of(replica: RunningGateway) -> RedisLink:
    link = replica.app.state.runtime.redis
    assert isinstance(link, RedisLink)
    return link


def classified_of(replica: RunningGateway, tenant: str = "agency-1", position: int = 1) -> str:
    return replica.sim.data.tenants[tenant][position]


async def latest(replica: RunningGateway, classified_id: str, tenant: str = "agency-1") -> Any:
    body = await replica.query(LATEST, {"id": classified_id}, headers={"x-intermediary-id": tenant})
    assert "errors" not in body, body
    return body["data"]["listing"]["classified"]["latestStatus"]


async def test_a_page_read_by_one_replica_is_served_by_the_other_per_tenant(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server, cache_ttl_s=30) as (one, two):
        classified_id = classified_of(one)
        first = await latest(one, classified_id)
        assert one.calls("v3", "classified_statuses") == 1
        assert await latest(two, classified_id) == first
        assert one.calls("v3", "classified_statuses") == 1  # replica 2 read it from Redis
        assert cache_of(two).shared.hits == 1

        # Another agency's pages are its own: the same read for agency-2 goes to V3.
        other = classified_of(one, "agency-2")
        await latest(one, other, "agency-2")
        await latest(two, other, "agency-2")
        assert one.calls("v3", "classified_statuses") == 2
        body = await two.query(
            LATEST, {"id": classified_id}, headers={"x-intermediary-id": "agency-2"}
        )
        assert one.calls("v3", "classified_statuses") == 3, (
            "agency-1's page must not serve agency-2"
        )
        assert body != {"data": {"listing": {"classified": {"latestStatus": first}}}}

        # The TTL is Redis' own expiry on every stored page.
        async with redis_server.client() as client:
            names = [name async for name in client.scan_iter("gateway:v3page:*")]
            assert len(names) >= 2
            ttls = [await client.pttl(name) for name in names]
        assert all(0 < ttl <= 30_000 for ttl in ttls), ttls


async def test_an_event_reaches_every_replica_once_and_drops_its_pages(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server, {"webhook_subscribe": True}) as (one, two):
        classified_id = classified_of(one)
        before = await latest(two, classified_id)
        await latest(one, classified_id)  # cached in both in-process layers and in Redis
        async with (
            bus_of(two).subscribe({classified_id}) as on_two,
            bus_of(one).subscribe({classified_id}) as on_one,
        ):
            # V3 posts the new status to replica 1's receiver (its subscription).
            async with httpx.AsyncClient(verify=LOOPBACK_TLS) as control:
                response = await control.post(
                    f"{one.running_sim.control_url}/classifieds/{classified_id}/statuses",
                    json={"status": "DELETING"},
                )
            response.raise_for_status()
            event = await anext(aiter(on_two))
            assert event.classified_id == classified_id
            assert event.status.raw_status == "DELETING"
            assert (await anext(aiter(on_one))).status == event.status

            # The same delivery again, now to replica 2: claimed already, published nowhere.
            body = {
                "status": "DELETING",
                "message": event.status.message,
                "statusDate": event.status.status_date.isoformat(),
                "portals": [p.value for p in event.status.portals],
            }
            if event.status.status_id:
                body["statusId"] = event.status.status_id
            path = f"/webhooks/v3/{SECRET}/classifieds/{classified_id}/statuses"
            assert (await two.client.post(path, json=body)).status_code == 201
            await bus_of(two).settled()
            marker = {"status": "UPDATED", "message": "m", "statusDate": "2031-01-01T00:00:00Z"}
            assert (await two.client.post(path, json=marker)).status_code == 201
            assert (await anext(aiter(on_two))).status.raw_status == "UPDATED"
            assert (await anext(aiter(on_one))).status.raw_status == "UPDATED"
        assert bus_of(two).shared.duplicates == 1

        after = await latest(two, classified_id)
        assert after != before
        assert after["status"] == "DELETING"


async def test_two_replicas_fetch_one_token_per_agency(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        await asyncio.gather(
            latest(one, classified_of(one, position=2)),
            latest(two, classified_of(one, position=3)),
            latest(one, classified_of(one, "agency-2", 2), "agency-2"),
            latest(two, classified_of(one, "agency-2", 3), "agency-2"),
        )
        assert one.calls("token") == 2  # one per agency, not one per replica


async def test_after_a_401_one_replica_renews_and_the_other_picks_the_token_up(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        await latest(one, classified_of(one, position=2))
        await latest(two, classified_of(one, position=3))
        assert one.calls("token") == 1
        one.sim.state.revoke_tokens()  # V3 answers 401 to the token both replicas hold
        assert (await latest(one, classified_of(one, position=8)))["status"]
        assert one.calls("token") == 2  # replica 1 renewed it
        assert (await latest(two, classified_of(one, position=9)))["status"]
        assert one.calls("token") == 2  # replica 2 took the renewed one from Redis


@asynccontextmanager
async def silent_redis(tmp_path: Path) -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A Redis URL on a socket that accepts and never replies (only a timeout ends a call to
    it), and the connections it accepted."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    path = tmp_path / "silent.sock"
    server = await asyncio.start_unix_server(silent, path=str(path))
    try:
        yield f"unix://{path}", accepted
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_redis_that_never_answers_counts_as_down_after_the_redis_timeout(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with (
        silent_redis(tmp_path) as (url, accepted),
        run_gateway(simulator, redis_url=url, redis_timeout_s=0.05) as gateway,
    ):
        assert link_of(gateway).op_timeout_s == 0.05
        assert (await latest(gateway, classified_of(gateway)))["status"]
        assert accepted, "the gateway did try Redis"
        ready = await gateway.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["redis"] == "degraded"


async def test_while_redis_is_silent_no_call_waits_for_it(tmp_path: Path) -> None:
    async with silent_redis(tmp_path) as (url, _):
        link = RedisLink(url, op_timeout_s=0.05, backoff_initial_s=0.01)
        try:
            with pytest.raises(RedisDown):
                await link.run(lambda r: r.ping())  # only the timeout ends it
            assert (link.state, link.stats.failures) == ("degraded", 1)

            # However long Redis stays silent, the calls end at once: the probe waits for it.
            for _ in range(3):
                await asyncio.sleep(0.05)  # past a backoff: the probe has tried again
                calls = [asyncio.ensure_future(link.run(lambda r: r.ping())) for _ in range(5)]
                await asyncio.sleep(0)  # one step each
                assert all(call.done() for call in calls)
                for call in calls:
                    with pytest.raises(RedisDown):
                        await call
            assert link.stats.skipped == 15
            assert link.stats.failures >= 2  # the probe's
        finally:
            await link.aclose()


@pytest.mark.parametrize("ending", ["answer", "lost connection"])
async def test_a_redis_call_that_swallows_its_cancellation_still_stops_its_caller(
    redis_server: RunningRedis, ending: str
) -> None:
    """redis-py may catch a cancellation landing in a command, then finish it or fail it as
    a lost connection: the caller stops all the same, and Redis is not counted as down."""
    link = RedisLink(redis_server.url)
    inside = asyncio.Event()

    async def swallowing(client: Any) -> str:
        await client.ping()
        inside.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if ending == "lost connection":
                raise RedisConnectionError("Connection closed by server.") from None
        return "finished anyway"

    try:
        call = asyncio.ensure_future(link.run(swallowing))
        await inside.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert (link.state, link.stats.failures) == ("ok", 0)
        assert await link.run(lambda r: r.ping()) is True
    finally:
        await link.aclose()


async def test_a_probe_brings_the_link_back_when_redis_returns_without_any_call(
    redis_server: RunningRedis,
) -> None:
    link = RedisLink(redis_server.url, backoff_initial_s=0.01, backoff_max_s=0.05)
    back = asyncio.Event()
    link.on_recovered(back.set)
    try:
        await link.run(lambda r: r.ping())
        await redis_server.stop()
        with pytest.raises(RedisDown):
            await link.run(lambda r: r.ping())
        assert link.state == "degraded"
        await redis_server.start()
        await back.wait()  # no call was made: the probe found Redis
        assert link.state == "ok"
        assert await link.run(lambda r: r.ping())
        assert link.stats.recovered == 1
    finally:
        await link.aclose()


async def test_a_replica_started_while_redis_refuses_starts_at_once(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    # Nothing listens on this socket, so every connection is refused at once. The start waits
    # for the first attempt of the event listener and of the change reader, not for Redis: with
    # a 60 s timeout, a start that waited for Redis to answer would hold for minutes.
    async with run_gateway(
        simulator, redis_url=f"unix://{tmp_path / 'nothing.sock'}", redis_timeout_s=60.0
    ) as gateway:
        assert link_of(gateway).state == "degraded"
        assert bus_of(gateway).tried.is_set() and not bus_of(gateway).listening.is_set()
        assert (await latest(gateway, classified_of(gateway)))["status"]
        ready = await gateway.client.get("/readyz")
        assert ready.json()["redis"] == "degraded"


async def test_without_redis_requests_succeed_degraded_and_sharing_resumes(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    async with replicas(simulator, redis_server) as (one, two):
        await redis_server.stop()
        classified_id = classified_of(one, position=4)
        assert (await latest(one, classified_id))["status"]
        assert (await latest(two, classified_id))["status"]
        assert one.calls("v3", "classified_statuses") == 2  # nothing shared now
        for replica in (one, two):
            ready = await replica.client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["redis"] == "degraded"
        metrics = (await one.client.get("/metrics")).text
        assert "gateway_redis_degraded_total 1.0" in metrics

        await redis_server.start()
        for replica in (one, two):
            await bus_of(replica).listening.wait()  # reconnected by itself
            assert link_of(replica).state == "ok"
        other = classified_of(one, position=6)
        await latest(one, other)
        await latest(two, other)
        assert one.calls("v3", "classified_statuses") == 3  # shared again
        ready = await two.client.get("/readyz")
        assert ready.json()["redis"] == "ok"


async def both_miss(
    one: RunningGateway,
    two: RunningGateway,
    redis: RunningRedis,
    classified_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, Any]:
    """The same page asked of both replicas: replica 1 takes its lock and reads V3, which
    answers only once replica 2 waits for the page. Both answer bodies."""
    reading, go_on = asyncio.Event(), asyncio.Event()

    async def held(seconds: float) -> None:
        reading.set()
        await go_on.wait()

    # Every V3 answer waits in `hang` until the test lets it go.
    monkeypatch.setattr(one.sim.state, "hang", held)
    one.sim.state.set_latency("v3", 1)
    async with redis.client() as watcher:
        # Keyspace events say when replica 2 marks that it waits for the page.
        await watcher.config_set("notify-keyspace-events", "K$")
        async with watcher.pubsub() as marks:
            await marks.psubscribe("__keyspace@0__:gateway:v3wait:*")
            first = asyncio.create_task(one.query(LATEST, {"id": classified_id}))
            await reading.wait()  # replica 1 holds the page's lock and reads V3
            second = asyncio.create_task(two.query(LATEST, {"id": classified_id}))
            async for message in marks.listen():
                if message["type"] == "pmessage":
                    break
            go_on.set()
            return await first, await second


async def test_concurrent_misses_on_two_replicas_read_v3_once(
    simulator: RunningSimulator, redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replicas(simulator, redis_server, cache_ttl_s=30) as (one, two):
        classified_id = classified_of(one, position=5)
        answers = await both_miss(one, two, redis_server, classified_id, monkeypatch)
        assert answers[0] == answers[1] and "errors" not in answers[0]
        assert one.calls("v3", "classified_statuses") == 1
        assert cache_of(one).shared.lock_wins == 1
        waiter = cache_of(two).shared
        # Woken by replica 1's release, not by the end of its wait.
        assert (waiter.lock_waits, waiter.lock_woken, waiter.lock_timeouts) == (1, 1, 0)
        assert waiter.hits == 1
        metrics = (await two.client.get("/metrics")).text
        assert 'gateway_shared_cache_events_total{event="lock_waits"} 1.0' in metrics


async def test_a_holder_whose_read_fails_wakes_the_waiter_to_read_v3_itself(
    simulator: RunningSimulator, redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replicas(simulator, redis_server, cache_ttl_s=30, upstream_retries=0) as (
        one,
        two,
    ):
        classified_id = classified_of(one, position=7)
        one.sim.state.add_fault("v3", "error", status=500, count=1, endpoint="classified_statuses")
        failed, answered = await both_miss(one, two, redis_server, classified_id, monkeypatch)
        assert failed["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert "errors" not in answered, answered
        assert one.calls("v3", "classified_statuses") == 2
        waiter = cache_of(two).shared
        # Woken when replica 1 let the lock go without a page: it read V3 itself.
        assert (waiter.lock_waits, waiter.lock_woken, waiter.lock_timeouts) == (1, 1, 1)


async def test_a_waiter_whose_lock_holder_never_stores_reads_v3_itself(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    # Half of the 1 s operation deadline is spent waiting, the other half is for V3.
    async with replicas(simulator, redis_server, cache_ttl_s=30, upstream_timeout_s=1.0) as (
        one,
        two,
    ):
        classified_id = classified_of(one, position=6)
        first = await latest(one, classified_id)
        reads = one.calls("v3", "classified_statuses")
        async with redis_server.client() as client:
            names = [
                n.decode() async for n in client.scan_iter(f"gateway:v3page:{classified_id}:*")
            ]
            assert names
            # A holder that took each page's lock for a minute and died: its pages never come.
            for name in names:
                await client.delete(name)
                await client.set(cache_of(two).lock_names(name)[0], b"gone", px=60_000)
            assert await latest(two, classified_id) == first
            for name in names:
                assert await client.get(cache_of(two).lock_names(name)[0]) == b"gone"
        assert one.calls("v3", "classified_statuses") == 2 * reads
        waiter = cache_of(two).shared
        assert waiter.lock_waits == waiter.lock_timeouts == len(names)
        assert waiter.lock_woken == 0


async def test_without_a_redis_url_readyz_says_redis_is_off(gateway: RunningGateway) -> None:
    assert (await gateway.client.get("/readyz")).json()["redis"] == "off"


async def test_two_gateway_serve_processes_share_pages_and_one_token(
    simulator: RunningSimulator, redis_server: RunningRedis, tmp_path: Path
) -> None:
    env = serve_env(simulator, GATEWAY_REDIS_URL=redis_server.url)
    gateway = str(Path(sys.executable).with_name("gateway"))
    processes = [
        await asyncio.create_subprocess_exec(
            gateway, "serve", stdout=PIPE, stderr=STDOUT, env=env, cwd=tmp_path
        )
        for _ in range(2)
    ]
    try:
        urls = []
        for process in processes:
            assert process.stdout is not None
            seen = ""
            while "Gateway listening" not in seen:
                line = await process.stdout.readline()
                assert line, f"gateway serve ended early:\n{seen}"
                seen += line.decode()
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/graphql", seen)
            assert found is not None, seen
            urls.append(found.group(1))
        classified_id = simulator.sim.data.tenants["agency-1"][7]
        answers = []
        for url in urls:  # replica 1 reads V3, replica 2 reads Redis
            async with httpx.AsyncClient(verify=LOOPBACK_TLS, base_url=url, timeout=30) as client:
                response = await client.post(
                    "/graphql", json={"query": LATEST, "variables": {"id": classified_id}}
                )
                answers.append(response.json())
                assert (await client.get("/readyz")).json()["redis"] == "ok"
        assert answers[0] == answers[1] and "errors" not in answers[0]
        assert simulator.sim.state.calls("v3", "classified_statuses") == 1
        assert simulator.sim.state.calls("token") == 1
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            assert process.stdout is not None
            await process.stdout.read()
            await process.wait()
    assert [p.returncode for p in processes] == [0, 0]


async def test_an_event_for_one_classified_lets_a_load_of_another_store_its_page(
    simulator: RunningSimulator, redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-classified epochs: a webhook for classified B, arriving while replica 1 reads
    classified A from V3, does not keep A's page out of Redis, so replica 2 is served it."""
    async with replicas(simulator, redis_server, cache_ttl_s=30) as (one, two):
        a, b = classified_of(one, position=10), classified_of(one, position=11)
        reading, go_on = asyncio.Event(), asyncio.Event()

        async def held(seconds: float) -> None:
            reading.set()
            await go_on.wait()

        monkeypatch.setattr(one.sim.state, "hang", held)
        one.sim.state.set_latency("v3", 1)
        loading = asyncio.create_task(latest(one, a))
        await reading.wait()  # replica 1 holds A's lock and reads V3
        async with bus_of(one).subscribe({b}) as heard:
            path = f"/webhooks/v3/{SECRET}/classifieds/{b}/statuses"
            marker = {"status": "UPDATED", "message": "m", "statusDate": "2031-01-01T00:00:00Z"}
            assert (await two.client.post(path, json=marker)).status_code == 201
            assert (await anext(aiter(heard))).classified_id == b  # replica 1 dropped B
        go_on.set()
        first = await loading
        assert cache_of(one).shared.stored >= 1 and cache_of(one).shared.overtaken == 0
        assert await latest(two, a) == first
        assert one.calls("v3", "classified_statuses") == 1  # replica 2 read A from Redis
        assert cache_of(two).shared.hits == 1


async def test_an_event_for_the_classified_being_loaded_keeps_its_page_out_of_redis(
    simulator: RunningSimulator, redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page read before the event may be the old one: it is handed to its caller but
    not shared, and replica 2 reads V3 itself."""
    async with replicas(simulator, redis_server, cache_ttl_s=30) as (one, two):
        a = classified_of(one, position=12)
        reading, go_on = asyncio.Event(), asyncio.Event()

        async def held(seconds: float) -> None:
            reading.set()
            await go_on.wait()

        monkeypatch.setattr(one.sim.state, "hang", held)
        one.sim.state.set_latency("v3", 1)
        loading = asyncio.create_task(latest(one, a))
        await reading.wait()
        async with bus_of(one).subscribe({a}) as heard:
            path = f"/webhooks/v3/{SECRET}/classifieds/{a}/statuses"
            marker = {"status": "UPDATED", "message": "m", "statusDate": "2031-01-01T00:00:00Z"}
            assert (await two.client.post(path, json=marker)).status_code == 201
            assert (await anext(aiter(heard))).classified_id == a
        go_on.set()
        await loading
        assert cache_of(one).shared.overtaken == 1
        await latest(two, a)
        assert one.calls("v3", "classified_statuses") == 2


class _Clock:
    """A replica's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_page_read_from_redis_late_in_its_life_is_as_old_here_as_it_is(
    simulator: RunningSimulator, redis_server: RunningRedis
) -> None:
    """Replica 2 reads a page that replica 1 stored 28 s ago (30 s TTL): it is fresh there
    for 2 s more, not for the in-process layer's 5 s, and stale-if-error counts its true
    age, up to the TTL and the stale window from when V3 answered it."""
    shared = {"redis_url": redis_server.url, "cache_ttl_s": 30, "cache_stale_s": 300}
    clock = _Clock()
    settings = settings_for(simulator, **shared)
    async with (
        run_gateway(simulator, **shared) as one,
        serve_app(create_app(settings, clock=clock), **server_options(settings)) as url,
        httpx.AsyncClient(base_url=url, timeout=30, verify=LOOPBACK_TLS) as client,
    ):
        two = RunningGateway(url=url, client=client, running_sim=simulator, app=None)
        classified_id = classified_of(one)
        first = await latest(one, classified_id)
        async with redis_server.client() as redis:
            (name,) = [name async for name in redis.scan_iter("gateway:v3page:*")]
            await redis.pexpire(name, 2000)  # as if stored 28 s ago
            assert await latest(two, classified_id) == first  # from Redis
            assert one.calls("v3", "classified_statuses") == 1
            await redis.delete(name)
        simulator.sim.state.add_fault("v3", "malformed")

        clock.now += 3  # 31 s after V3 answered, 3 s after replica 2 read it from Redis
        stale = await two.query(LATEST, {"id": classified_id})
        assert stale["data"]["listing"]["classified"]["latestStatus"] == first
        [marked] = stale["extensions"]["stale"]
        assert marked["classifiedId"] == classified_id
        assert 31 <= marked["ageSeconds"] < 40, marked

        clock.now += 300  # 331 s after V3 answered: past the TTL and the stale window
        gone = await two.query(LATEST, {"id": classified_id})
        assert [error["extensions"]["code"] for error in gone["errors"]] == ["UPSTREAM_UNAVAILABLE"]
