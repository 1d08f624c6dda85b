"""PageCache: TTL, bound, single-flight, and never caching a failure."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache import PageCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_next = False

    async def __call__(self) -> str:
        self.calls += 1
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("upstream down")
        return f"page-{self.calls}"


async def test_hit_until_ttl_then_reload() -> None:
    clock = Clock()
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10, timer=clock)
    load = Loader()
    assert await cache.get_or_load("k", load) == "page-1"
    clock.now = 29.9
    assert await cache.get_or_load("k", load) == "page-1"
    clock.now = 30.1
    assert await cache.get_or_load("k", load) == "page-2"
    assert cache.stats.hits == 1
    assert cache.stats.misses == 2


async def test_concurrent_misses_make_one_load() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    waiters = [asyncio.ensure_future(cache.get_or_load("k", load)) for _ in range(50)]
    await asyncio.sleep(0)
    load.gate.set()
    assert set(await asyncio.gather(*waiters)) == {"page-1"}
    assert load.calls == 1
    assert cache.stats.coalesced == 49


async def test_a_failure_reaches_every_waiter_and_is_not_cached() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    load.fail_next = True
    waiters = [asyncio.ensure_future(cache.get_or_load("k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    load.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert await cache.get_or_load("k", load) == "page-2"
    assert load.calls == 2


async def test_one_waiter_cancelled_does_not_cancel_the_shared_load() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    first = asyncio.ensure_future(cache.get_or_load("k", load))
    second = asyncio.ensure_future(cache.get_or_load("k", load))
    await asyncio.sleep(0)
    first.cancel()
    load.gate.set()
    assert await second == "page-1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await cache.get_or_load("k", load) == "page-1"  # stored despite the cancellation


async def test_bounded_by_max_entries() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=3)
    load = Loader()
    for key in range(10):
        await cache.get_or_load(key, load)
    assert len(cache) == 3


async def test_refresh_bypasses_and_replaces() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    await cache.get_or_load("k", load)
    assert await cache.get_or_load("k", load, refresh=True) == "page-2"
    assert await cache.get_or_load("k", load) == "page-2"


async def test_invalidate_drops_matching_keys_and_a_load_in_flight_is_not_stored() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    await cache.get_or_load(("t1", "classified", "c1"), load)
    await cache.get_or_load(("t2", "classified", "c1"), load)
    await cache.get_or_load(("t1", "classified", "c2"), load)
    load.gate.clear()
    pending = asyncio.ensure_future(cache.get_or_load(("t1", "classified", "c3"), load))
    await asyncio.sleep(0)
    assert cache.invalidate(lambda key: key[2] == "c1") == 2  # type: ignore[index]
    load.gate.set()
    assert await pending == "page-4"
    assert len(cache) == 1  # only c2: c3's load started before the invalidation


async def test_zero_ttl_disables_storage_but_still_coalesces() -> None:
    cache: PageCache[str] = PageCache(ttl_s=0, max_entries=10)
    load = Loader()
    load.gate.clear()
    waiters = [asyncio.ensure_future(cache.get_or_load("k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    load.gate.set()
    await asyncio.gather(*waiters)
    assert load.calls == 1
    await cache.get_or_load("k", load)
    assert load.calls == 2
