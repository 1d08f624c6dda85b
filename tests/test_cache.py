"""PageCache: TTL, bound, single-flight, never caching a failure, dropping per classified."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from gateway.cache.pages import PageCache, PageKey


def page(classified_id: str = "c1", tenant: str = "t1", token: str | None = None) -> PageKey:
    return PageKey(tenant, "classified", classified_id, next_token=token)


K = page()


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
        number = self.calls
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("upstream down")
        return f"page-{number}"


async def test_hit_until_ttl_then_reload() -> None:
    clock = Clock()
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10, timer=clock)
    load = Loader()
    assert await cache.get_or_load(K, load) == "page-1"
    clock.now = 29.9
    assert await cache.get_or_load(K, load) == "page-1"
    clock.now = 30.1
    assert await cache.get_or_load(K, load) == "page-2"
    assert cache.stats.hits == 1
    assert cache.stats.misses == 2


async def test_concurrent_misses_make_one_load() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    waiters = [asyncio.ensure_future(cache.get_or_load(K, load)) for _ in range(50)]
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
    waiters = [asyncio.ensure_future(cache.get_or_load(K, load)) for _ in range(3)]
    await asyncio.sleep(0)
    load.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
    assert await cache.get_or_load(K, load) == "page-2"
    assert load.calls == 2


async def test_a_waiter_whose_first_caller_left_still_gets_the_page() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    first = asyncio.ensure_future(cache.get_or_load(K, load))
    second = asyncio.ensure_future(cache.get_or_load(K, load))
    await asyncio.sleep(0)
    assert (load.calls, cache.stats.coalesced) == (1, 1)  # one load; the second waits for it
    first.cancel()  # the first caller loads in its own task: its load ends with it
    with pytest.raises(asyncio.CancelledError):
        await first
    load.gate.set()
    assert await second == "page-2"  # begun again for the caller still waiting
    assert await cache.get_or_load(K, load) == "page-2"  # and stored
    assert load.calls == 2


async def test_a_load_whose_only_caller_left_ends_with_it() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    only = asyncio.ensure_future(cache.get_or_load(K, load))
    await asyncio.sleep(0)
    only.cancel()
    with pytest.raises(asyncio.CancelledError):
        await only
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing reads on for nobody
    load.gate.set()
    assert await cache.get_or_load(K, load) == "page-2"  # nothing was stored: read anew
    assert cache.stats.loads_failed == 1


async def test_bounded_by_max_entries() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=3)
    load = Loader()
    for key in range(10):
        await cache.get_or_load(page(f"c{key}"), load)
    assert len(cache) == 3


async def test_refresh_bypasses_and_replaces() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    await cache.get_or_load(K, load)
    assert await cache.get_or_load(K, load, refresh=True) == "page-2"
    assert await cache.get_or_load(K, load) == "page-2"


async def test_drop_classified_drops_its_pages_for_every_tenant() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    for key in (page("c1"), page("c1", token="n2"), page("c1", "t2"), page("c2")):
        await cache.get_or_load(key, load)
    assert cache.drop_classified("c1") == 3
    assert cache.drop_classified("c1") == 0
    assert len(cache) == 1
    assert await cache.get_or_load(page("c2"), load) == "page-4"  # untouched
    assert await cache.get_or_load(page("c1"), load) == "page-5"  # read anew
    assert cache.stats.invalidated == 3


async def test_drop_classified_for_one_tenant_keeps_the_others() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    await cache.get_or_load(page("c1", "t1"), load)
    await cache.get_or_load(page("c1", "t2"), load)
    assert cache.drop_classified("c1", tenant="t1") == 1
    assert await cache.get_or_load(page("c1", "t2"), load) == "page-2"
    assert await cache.get_or_load(page("c1", "t1"), load) == "page-3"


async def test_a_drop_discards_only_the_loads_in_flight_for_the_keys_it_dropped() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    load.gate.clear()
    doomed = asyncio.ensure_future(cache.get_or_load(page("c1"), load))
    unrelated = asyncio.ensure_future(cache.get_or_load(page("c2"), load))
    await asyncio.sleep(0)
    assert cache.drop_classified("c1") == 0  # nothing stored yet, but its load is in flight
    load.gate.set()
    assert await doomed == "page-1"  # its caller asked before the drop: it still gets an answer
    assert await unrelated == "page-2"
    assert await cache.get_or_load(page("c2"), load) == "page-2"  # stored
    assert await cache.get_or_load(page("c1"), load) == "page-3"  # not stored: read anew
    assert cache.stats.loads_discarded == 1


async def test_after_a_drop_a_new_caller_does_not_join_the_discarded_load() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    old, new = Loader(), Loader()
    old.gate.clear()
    before = asyncio.ensure_future(cache.get_or_load(K, old))
    await asyncio.sleep(0)
    cache.drop_classified(K.classified_id)
    assert await cache.get_or_load(K, new) == "page-1"
    assert new.calls == 1
    old.gate.set()
    await before
    assert await cache.get_or_load(K, old) == "page-1"  # the new load's value stayed


async def test_a_refresh_is_not_overwritten_by_an_older_load() -> None:
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    old = Loader()
    old.gate.clear()
    older = asyncio.ensure_future(cache.get_or_load(K, old))
    await asyncio.sleep(0)
    fresh = Loader()
    assert await cache.get_or_load(K, fresh, refresh=True) == "page-1"
    old.gate.set()
    await older
    assert await cache.get_or_load(K, Loader()) == "page-1"  # the refreshed value stayed


async def test_the_index_forgets_pages_the_cache_let_go() -> None:
    clock = Clock()
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=2, timer=clock)
    load = Loader()
    for n in range(5):  # three evicted by the bound
        await cache.get_or_load(page(f"c{n}"), load)
    clock.now = 31
    await cache.get_or_load(page("c9"), load)  # storing expires the other two
    load.fail_next = True
    with pytest.raises(RuntimeError):
        await cache.get_or_load(page("c8"), load)  # a failed load leaves nothing behind
    assert cache._index.keys() == {"c9"}
    assert cache.drop_classified("c0") == 0


async def test_zero_ttl_disables_storage_but_still_coalesces() -> None:
    cache: PageCache[str] = PageCache(ttl_s=0, max_entries=10)
    load = Loader()
    load.gate.clear()
    waiters = [asyncio.ensure_future(cache.get_or_load(K, load)) for _ in range(5)]
    await asyncio.sleep(0)
    load.gate.set()
    await asyncio.gather(*waiters)
    assert load.calls == 1
    await cache.get_or_load(K, load)
    assert load.calls == 2


async def test_keys_stored_share_their_query_parameters_and_drops_find_them_all() -> None:
    # Cached pages are many: equal query parameters are held once, whatever tuples the
    # callers built, and the index (a tuple per classified) still finds every key.
    cache: PageCache[str] = PageCache(ttl_s=30, max_entries=10)
    load = Loader()
    for classified_id, token in (("c1", None), ("c2", None), ("c1", "n2"), ("c1", "n3")):
        key = PageKey("t1", "classified", classified_id, params=PageKey.query({"limit": 100}))
        await cache.get_or_load(dataclasses.replace(key, next_token=token), load)
    stored = list(cache._kept or ())
    assert len(stored) == 4 and len({id(key.params) for key in stored}) == 1
    assert cache._index["c1"] == tuple(key for key in stored if key.classified_id == "c1")
    cache.drop_classified("c1", tenant="t1")
    assert cache._index.keys() == {"c2"}
    assert len(cache) == 1
