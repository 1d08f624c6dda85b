"""Cross-request caching of upstream pages, with single-flight loading.

`PageCache` keeps awaited values (never exceptions, never coroutines) in a
`cachetools.TTLCache`, and coalesces concurrent misses on one key into one load:
the first caller starts the load as a task, later callers await the same task.
A load that fails is not cached and every waiter sees the failure.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

V = TypeVar("V")


@dataclass(slots=True)
class CacheStats:
    """What the cache did, for tests, benchmarks and metrics."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    loads_failed: int = 0
    invalidated: int = 0


class PageCache(Generic[V]):
    """A bounded TTL cache of awaited values with single-flight misses.

    >>> cache = PageCache(ttl_s=30, max_entries=10_000)
    >>> page = await cache.get_or_load(key, lambda: client.fetch(...))
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._entries: TTLCache[Hashable, V] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s, timer=timer) if ttl_s > 0 else None
        )
        self._inflight: dict[Hashable, asyncio.Task[V]] = {}
        # Bumped by invalidation, so a load that started before it does not store a stale page.
        self._generation = 0
        self.stats = CacheStats()

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    async def get_or_load(
        self, key: Hashable, load: Callable[[], Awaitable[V]], *, refresh: bool = False
    ) -> V:
        """The cached value for `key`, or the result of `load()` (stored on success).

        With `refresh`, the cached value is ignored and replaced by a fresh load.
        """
        if not refresh and self._entries is not None:
            try:
                value = self._entries[key]
            except KeyError:
                pass
            else:
                self.stats.hits += 1
                return value
        task = self._inflight.get(key)
        if task is not None and not refresh:
            self.stats.coalesced += 1
        else:
            self.stats.misses += 1
            task = asyncio.ensure_future(self._load(key, load, self._generation))
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        # Shielded: one caller giving up must not cancel the load the others wait for.
        return await asyncio.shield(task)

    async def _load(self, key: Hashable, load: Callable[[], Awaitable[V]], generation: int) -> V:
        try:
            value = await load()
        except BaseException:
            self.stats.loads_failed += 1
            raise
        if self._entries is not None and generation == self._generation:
            self._entries[key] = value
        return value

    def _forget(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            # Mark the exception retrieved: waiters may all have gone away.
            task.exception()

    def invalidate(self, predicate: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key matches; returns how many were dropped."""
        self._generation += 1
        if self._entries is None:
            return 0
        doomed = [key for key in list(self._entries.keys()) if predicate(key)]
        for key in doomed:
            self._entries.pop(key, None)
        self.stats.invalidated += len(doomed)
        return len(doomed)

    def clear(self) -> None:
        self._generation += 1
        if self._entries is not None:
            self._entries.clear()
