"""A caller's deadline (`gateway.infra.deadlines`) shortens every upstream operation under it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.cache.pages import PageCache, PageKey
from gateway.domain.errors import DeadlineExceeded, UpstreamUnavailable
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.infra.deadlines import caller_deadline, caller_deadline_at
from gateway.simulator import RunningSimulator
from gateway.upstreams import Deadline
from gateway.upstreams.breaker import BreakerState

from gateway_harness import run_gateway


async def test_the_earlier_of_both_deadlines_wins() -> None:
    assert Deadline.after(5).seconds == 5
    with caller_deadline(0.5):
        assert 0 < Deadline.after(5).seconds <= 0.5
        with caller_deadline(None):  # no caller bound: the outer one still holds
            assert Deadline.after(5).seconds <= 0.5
    with caller_deadline(30):
        assert Deadline.after(5).seconds == 5
    with caller_deadline(-1):  # already past: the operation has no time left
        assert Deadline.after(5).remaining() == 0


async def test_an_upstream_call_under_a_caller_deadline_ends_with_it(
    simulator: RunningSimulator,
) -> None:
    # The default pause between retries (0.1 s and more), which the shared fixture skips.
    async with run_gateway(simulator, upstream_backoff_s=0.1) as gateway:
        listing = gateway.sim.data.listings[0]
        gateway.sim.state.add_fault("legacy", "timeout", delay_s=20)
        legacy = gateway.app.state.runtime.upstreams.legacy
        with caller_deadline(0.2), pytest.raises(DeadlineExceeded) as caught:
            await legacy.ad_status(listing.user_id, listing.ad_id)
        assert "caller's deadline" in caught.value.message
        assert isinstance(caught.value, UpstreamUnavailable)  # stale pages may still answer
        # Its own budget (GATEWAY_UPSTREAM_TIMEOUT_S, 5 s) leaves room for retries after a
        # hung attempt; under the caller's 0.2 s, the first takes half and a pause the rest.
        assert gateway.calls("legacy", "status_get") == 1


async def test_a_callers_deadline_running_out_never_opens_the_breaker(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, breaker_failures=2) as gateway:
        listing = gateway.sim.data.listings[0]
        gateway.sim.state.add_fault("legacy", "timeout", delay_s=20)
        upstreams = gateway.app.state.runtime.upstreams
        for _ in range(5):
            with caller_deadline(0.05), pytest.raises(DeadlineExceeded):
                await upstreams.legacy.ad_status(listing.user_id, listing.ad_id)
        assert [guard.breaker.state for guard in upstreams.guards] == [BreakerState.CLOSED] * 2
        ready = await gateway.client.get("/readyz")
        assert ready.status_code == 200, ready.json()


async def test_short_grpc_deadlines_leave_the_replica_ready_and_hear_deadline_exceeded(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator, grpc=True, breaker_failures=2) as gateway:
        item = gateway.sim.data.listings[0]
        # Both upstreams answer, but later than the callers are willing to wait.
        gateway.sim.state.add_fault("legacy", "timeout", delay_s=0.5)
        gateway.sim.state.add_fault("v3", "timeout", delay_s=0.5)
        request = pb.GetListingRequest(
            ref=pb.ListingRef(
                classified_id=item.classified_id,
                legacy=pb.LegacyAdRef(user_id=item.user_id, ad_id=item.ad_id),
            )
        )
        async with grpc.aio.insecure_channel(gateway.grpc_address) as channel:
            stub = pb_grpc.ListingStatusServiceStub(channel)
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetListing(request, timeout=0.05)
                assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        upstreams = gateway.app.state.runtime.upstreams
        assert upstreams.open_circuits() == []
        ready = await gateway.client.get("/readyz")
        assert ready.status_code == 200, ready.json()


async def test_a_shared_load_runs_under_its_own_deadline_not_the_first_callers() -> None:
    cache: PageCache[float | None] = PageCache(ttl_s=30, max_entries=10)
    key = PageKey(tenant="t", kind="classified", classified_id="c-1")
    release = asyncio.Event()

    async def load() -> float | None:
        await release.wait()
        return caller_deadline_at()

    with caller_deadline(0.05):
        first = asyncio.ensure_future(cache.get_or_load(key, load))
        await asyncio.sleep(0)
    second = asyncio.ensure_future(cache.get_or_load(key, load))
    await asyncio.sleep(0)
    release.set()
    assert await first is None  # the first caller's deadline did not reach the load
    assert await second is None
    assert cache.stats.coalesced == 1
