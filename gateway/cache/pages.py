"""Cross-request caching of upstream pages, with single-flight loading.

`PageCache` keeps awaited values (never exceptions, never coroutines) in a
`cachetools.TTLCache`, and coalesces concurrent misses on one key into one load:
the first caller loads in its own task, later callers await its outcome; should the
first go away (cancelled) while others wait, the load begins again in a task for them.
A load that fails is not cached and every waiter sees the failure.

Keys are `PageKey`s: named fields, so the cache can index them by classified.
Dropping a classified (a webhook event, a refresh) then costs the pages of that
classified, not a scan of the cache, and discards only the loads in flight for
the keys it dropped: each load is its key's current *flight*, and a flight that
was dropped or overtaken (by a refresh) does not store what it read.

With `stale_s`, a value is kept `stale_s` past its TTL, for stale-if-error: `stale(key)`
hands it out (with its age) when a fresh load failed. Each value is stored once, with the
time it was read upstream and the time it stays fresh until; whether it is fresh is decided
when it is read. A drop (a webhook event, a refresh) removes it, so a page known to be
outdated is never served; keys carry the tenant, so neither is a page of another tenant.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from gateway.infra.deadlines import without_caller_deadline

V = TypeVar("V")

ParamValue = str | int | bool | tuple[str, ...]
Params = tuple[tuple[str, ParamValue], ...]
_MAX_PARAMS = 1024  # distinct query parameters held once (past it, forgotten all at once)


@dataclass(frozen=True, slots=True)
class PageKey:
    """One upstream page as the cache knows it.

    `tenant` keeps one caller's pages from another's; `params` holds every other
    query parameter of the read (sorted by name, empty values left out), so two
    reads share a key exactly when they would ask the upstream the same thing.
    """

    tenant: str
    kind: str  # what was read: "classified" or "media"
    classified_id: str
    media_id: str | None = None
    params: Params = ()
    next_token: str | None = None

    @staticmethod
    def query(params: Mapping[str, ParamValue | None]) -> Params:
        """`params` in key form: sorted, without unset (None, False, empty) values."""
        return tuple(sorted((name, value) for name, value in params.items() if value))


@dataclass(slots=True)
class CacheStats:
    """What the cache did, for tests, benchmarks and metrics."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    loads_failed: int = 0
    invalidated: int = 0  # stored pages dropped by drop_classified
    loads_discarded: int = 0  # loads that finished after their key was dropped or refreshed
    stale_served: int = 0  # past-TTL pages handed out because a fresh load failed


@dataclass(eq=False, slots=True)
class _Flight(Generic[V]):
    """One load of one key; stores its value only while it is the key's current flight."""

    key: PageKey
    # What callers that joined the load await; made when the first one joins.
    shared: asyncio.Future[V] | None = None
    current: bool = True


class _Entries(TTLCache[PageKey, Any]):
    """A TTLCache that says which keys it lets go on its own (expiry, the size bound)."""

    def __init__(
        self,
        *,
        maxsize: int,
        ttl: float,
        timer: Callable[[], float],
        gone: Callable[[PageKey], None],
    ) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self._gone = gone

    def expire(self, time: float | None = None) -> list[tuple[PageKey, Any]]:
        expired: list[tuple[PageKey, Any]] = list(super().expire(time))
        for key, _ in expired:
            self._gone(key)
        return expired

    def popitem(self) -> tuple[PageKey, Any]:
        key, value = super().popitem()
        self._gone(key)
        return key, value


class PageCache(Generic[V]):
    """A bounded TTL cache of awaited values with single-flight misses.

    >>> cache = PageCache(ttl_s=30, max_entries=10_000)
    >>> page = await cache.get_or_load(key, lambda: client.fetch(...))
    >>> cache.drop_classified("c1")  # every tenant's pages of c1
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        timer: Callable[[], float] = time.monotonic,
        stale_s: float = 0.0,
    ) -> None:
        self._ttl_s = ttl_s
        self._stale_s = stale_s if ttl_s > 0 else 0.0
        self._timer = timer
        # key -> (value, read upstream at, fresh until), kept until TTL + stale_s.
        self._kept: _Entries | None = (
            _Entries(
                maxsize=max_entries, ttl=ttl_s + self._stale_s, timer=timer, gone=self._unindex
            )
            if ttl_s > 0
            else None
        )
        self._inflight: dict[PageKey, _Flight[V]] = {}
        # classified id -> every key of it that is stored or loading. A tuple: a classified
        # has a key or a few, and a set would cost ~200 bytes more for every one.
        self._index: dict[str, tuple[PageKey, ...]] = {}
        # One tuple for each distinct query parameters of the keys stored (a handful: the
        # history's page size, a latest filter...), bounded all the same.
        self._params: dict[Params, Params] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        """How many fresh values are stored (a scan: for tests and benchmarks)."""
        if self._kept is None:
            return 0
        now = self._timer()
        return sum(1 for _, _, until in list(self._kept.values()) if not until < now)

    def _stamps(self, key: PageKey, now: float) -> tuple[float, float]:
        """(when the value `key` just loaded was read upstream, when it stops being fresh)."""
        return now, now + self._ttl_s

    async def get_or_load(
        self, key: PageKey, load: Callable[[], Awaitable[V]], *, refresh: bool = False
    ) -> V:
        """The cached value for `key`, or the result of `load()` (stored on success).

        With `refresh`, the cached value and any load in flight are passed over and
        replaced by a fresh load.
        """
        if not refresh and self._kept is not None:
            kept = self._kept.get(key)
            if kept is not None and not kept[2] < self._timer():
                self.stats.hits += 1
                value: V = kept[0]
                return value
        flight = self._inflight.get(key)
        if flight is not None and not refresh:
            self.stats.coalesced += 1
            if flight.shared is None:
                flight.shared = asyncio.get_running_loop().create_future()
            # Shielded: one caller giving up must not cancel what the others wait for.
            return await asyncio.shield(flight.shared)
        if flight is not None:
            flight.current = False  # overtaken: the refresh stores its own value
        self.stats.misses += 1
        key = self._shared(key)
        flight = _Flight(key)
        self._inflight[key] = flight
        keys = self._index.get(key.classified_id, ())
        if key not in keys:
            self._index[key.classified_id] = (*keys, key)
        return await self._lead(flight, load)

    async def _lead(self, flight: _Flight[V], load: Callable[[], Awaitable[V]]) -> V:
        """The first caller loads in its own task: no task, shield or turn of the event
        loop between a miss and its upstream call. Should that caller go away while
        others wait, the load is begun again in a task of its own, for them."""
        try:
            value = await self._load(flight, load)
        except asyncio.CancelledError:
            shared = flight.shared
            if shared is not None and not shared.done():
                handover = asyncio.ensure_future(self._load(flight, load))
                handover.add_done_callback(functools.partial(self._handed_over, flight))
            else:
                self._landed(flight)
            raise
        except BaseException as exc:
            self._landed(flight)
            if flight.shared is not None and not flight.shared.done():
                flight.shared.set_exception(exc)
                flight.shared.exception()  # retrieved: those waiting may all have gone
            raise
        self._landed(flight)
        if flight.shared is not None and not flight.shared.done():
            flight.shared.set_result(value)
        return value

    def _handed_over(self, flight: _Flight[V], task: asyncio.Task[V]) -> None:
        self._landed(flight)
        shared = flight.shared
        assert shared is not None
        if task.cancelled():
            shared.cancel()
        elif (error := task.exception()) is not None:
            if not shared.done():
                shared.set_exception(error)
                shared.exception()
        elif not shared.done():
            shared.set_result(task.result())

    def _shared(self, key: PageKey) -> PageKey:
        """`key`, its parameters held once for every key that has the same."""
        params = self._params.get(key.params)
        if params is None:
            if len(self._params) >= _MAX_PARAMS:
                self._params.clear()
            params = self._params[key.params] = key.params
        if params is key.params:
            return key
        return PageKey(
            key.tenant, key.kind, key.classified_id, key.media_id, params, key.next_token
        )

    async def _load(self, flight: _Flight[V], load: Callable[[], Awaitable[V]]) -> V:
        try:
            # Other callers may join this load: it runs under the upstream's own deadline,
            # not under the first caller's (each caller still stops waiting at its own).
            with without_caller_deadline():
                value = await load()
        except BaseException:
            self.stats.loads_failed += 1
            raise
        read_at, until = self._stamps(flight.key, self._timer())
        if not flight.current:
            self.stats.loads_discarded += 1
        elif self._kept is not None:
            self._kept[flight.key] = (value, read_at, until)
        return value

    def stale(self, key: PageKey) -> tuple[V, float] | None:
        """The last good value of `key` and its age in seconds, if still within the stale
        window; for a caller whose fresh load just failed."""
        if self._kept is None or self._stale_s <= 0:
            return None
        kept = self._kept.get(key)
        if kept is None:
            return None
        value, read_at, _ = kept
        age = self._timer() - read_at
        if age > self._ttl_s + self._stale_s:
            return None  # read elsewhere (another replica) long before it was kept here
        self.stats.stale_served += 1
        return value, max(0.0, age)

    def _landed(self, flight: _Flight[V]) -> None:
        key = flight.key
        if self._inflight.get(key) is flight:
            del self._inflight[key]
            if self._kept is None or key not in self._kept:
                self._unindex(key)

    def _unindex(self, key: PageKey) -> None:
        if key in self._inflight:
            return  # still loading: the index must keep finding it
        if self._kept is not None and key in self._kept:
            return  # stored (fresh or kept for stale-if-error): a drop must still find it
        keys = self._index.get(key.classified_id)
        if keys is not None and key in keys:
            rest = tuple(other for other in keys if other != key)
            if rest:
                self._index[key.classified_id] = rest
            else:
                del self._index[key.classified_id]

    def drop_classified(self, classified_id: str, tenant: str | None = None) -> int:
        """Forget the classified's pages (of one tenant, or of every tenant) and discard
        the loads in flight for them; returns how many stored pages were dropped.

        Costs the number of pages of that classified, whatever the size of the cache.
        """
        keys = self._index.get(classified_id)
        if not keys:
            return 0
        doomed = [key for key in keys if tenant is None or key.tenant == tenant]
        return self._drop(doomed)

    def clear(self) -> None:
        """Forget every page and discard every load in flight."""
        for flight in self._inflight.values():
            flight.current = False
        self._inflight.clear()
        self._index.clear()
        if self._kept is not None:
            self._kept.clear()

    def _drop(self, keys: Iterable[PageKey]) -> int:
        dropped = 0
        now = self._timer()
        for key in keys:
            flight = self._inflight.pop(key, None)
            if flight is not None:
                flight.current = False
            if self._kept is not None:
                kept = self._kept.pop(key, None)
                if kept is not None and not kept[2] < now:
                    dropped += 1
            self._unindex(key)
        self.stats.invalidated += dropped
        return dropped


__all__ = ["CacheStats", "PageCache", "PageKey", "ParamValue"]
