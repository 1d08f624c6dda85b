"""Legacy ad statuses shared across requests, with single-flight reads.

Legacy changes take minutes to happen, yet a board open in many browsers asks for the same
ads at every refresh. `LegacyStatusCache` keeps each ad's answer for `ttl_s`
(GATEWAY_LEGACY_CACHE_TTL_S) and lets concurrent requests share reads:

- An ad with a fresh entry is answered from it. An ad that another request is reading now
  waits for that read (its *flight*); a request's other ads of one user are read together in
  one flight of its own (one `POST /status/` per chunk: the client chunks), which requests
  arriving meanwhile join. A caller that gives up does not cancel a flight others wait for.
- An entry holds what the legacy API answered and when it was stored; whether it is fresh
  is decided when it is read. "No such ad" is an answer too and is kept as one; a read that
  fails stores nothing, and every request waiting for it sees the failure.
- `ads_status` reads anew, never from the entries, and replaces them: `refreshListing`
  (`force`) and the legacy poller read through it, so watched ads stay fresh without reads
  of their own. An entry is replaced only by a read that began after the read that stored
  it, so a slow plain read that lands late never undoes a refresh.
- Entries are keyed by (user, ad). The legacy API answers through the gateway's one key,
  whoever the caller is, so an answer does not depend on the caller (the V3 tenant plays no
  part); one cache serves one legacy key, and the Redis layer
  (`gateway.cache.shared_legacy`) puts the key's fingerprint in its names, so gateways with
  other keys never share an entry.
- With `ttl_s == 0` nothing is kept and nothing is shared: every request reads for itself.

Depends on the domain and `gateway.infra.deadlines` only.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cachetools import TTLCache

from gateway.domain.errors import GatewayError, UpstreamNotFound, capture
from gateway.domain.models import LegacyAdKey, LegacyAdStatus, LegacyBatch
from gateway.infra.deadlines import without_caller_deadline

DEFAULT_MAX_ENTRIES: Final = 20_000

# One ad's outcome for one request: its status, or why there is none.
LegacyOutcome = LegacyAdStatus | GatewayError


class LegacyReader(Protocol):
    """What the cache needs of the legacy client."""

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch: ...


@dataclass(frozen=True, slots=True)
class Entry:
    """One ad's answer: its status (None: the legacy API reports no such ad), when it was
    stored (the cache's clock), and the order of the read that found it."""

    status: LegacyAdStatus | None
    stored_at: float
    order: int


@dataclass(eq=False, slots=True)
class _Flight:
    """One read in flight of some ads of one user; requests that need them await its task."""

    user_id: int
    ad_ids: tuple[int, ...]
    order: int
    task: asyncio.Task[LegacyBatch] | None = None


@dataclass(slots=True)
class LegacyCacheStats:
    """What the cache did, for tests, benchmarks and metrics (counted per ad, but `reads`)."""

    hits: int = 0  # answered from a fresh entry
    coalesced: int = 0  # joined a read another request had started
    misses: int = 0  # read in a flight of their own
    reads: int = 0  # flights started (each is one user's batch: one call per chunk)
    refreshed: int = 0  # read anew through `ads_status` (refreshes, the poller)
    stored: int = 0  # entries written
    overtaken: int = 0  # answers not stored: a read that began later had stored one


class LegacyStatusCache:
    """Legacy ad statuses kept `ttl_s`, with single-flight reads (see the module docstring).

    >>> cache = LegacyStatusCache(legacy_client, ttl_s=5)
    >>> outcomes = await cache.statuses([LegacyAdKey(12311, 659593)])  # one per key
    >>> batch = await cache.ads_status(12311, [659593], force=True)  # anew, replacing
    """

    def __init__(
        self,
        reader: LegacyReader,
        *,
        ttl_s: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must not be negative")
        self.reader = reader
        self.ttl_s = ttl_s
        self.timer = timer
        self._entries: TTLCache[LegacyAdKey, Entry] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_s, timer=timer) if ttl_s > 0 else None
        )
        self._flights: dict[LegacyAdKey, _Flight] = {}
        self._orders = itertools.count(1)
        self.stats = LegacyCacheStats()

    @property
    def sharing(self) -> bool:
        """Whether answers are kept and shared at all (`ttl_s > 0`)."""
        return self._entries is not None

    def __len__(self) -> int:
        """How many fresh entries are kept (a scan: for tests and benchmarks)."""
        if self._entries is None:
            return 0
        now = self.timer()
        return sum(1 for entry in list(self._entries.values()) if self._is_fresh(entry, now))

    def entry(self, key: LegacyAdKey) -> Entry | None:
        """The fresh entry of `key`, if there is one."""
        if self._entries is None:
            return None
        entry = self._entries.get(key)
        return entry if entry is not None and self._is_fresh(entry, self.timer()) else None

    def _is_fresh(self, entry: Entry, now: float) -> bool:
        return entry.stored_at + self.ttl_s > now

    def next_order(self) -> int:
        """A number for a read that begins now: later reads get larger ones."""
        return next(self._orders)

    # --- reads for requests -------------------------------------------------------------

    async def statuses(
        self, keys: Sequence[LegacyAdKey], *, force: bool = False
    ) -> list[LegacyOutcome]:
        """One outcome per key, in the keys' order: fresh entries, reads in flight, and one
        new read per user for the rest. With `force` every ad is read anew (and replaced)."""
        if force or self._entries is None:
            return await self._read_by_user(keys, force=force)
        now = self.timer()
        answers: dict[LegacyAdKey, Entry | _Flight] = {}
        unread: dict[int, list[int]] = defaultdict(list)
        seen: set[LegacyAdKey] = set()
        for key in keys:
            if key in seen:
                continue
            seen.add(key)
            entry = self._entries.get(key)
            if entry is not None and self._is_fresh(entry, now):
                self.stats.hits += 1
                answers[key] = entry
                continue
            flight = self._flights.get(key)
            if flight is not None:
                self.stats.coalesced += 1
                answers[key] = flight
                continue
            unread[key.user_id].append(key.ad_id)
        for user_id, ad_ids in unread.items():
            flight = self._take_off(user_id, ad_ids)
            answers.update((LegacyAdKey(user_id, ad_id), flight) for ad_id in ad_ids)
        flights = list({id(a): a for a in answers.values() if isinstance(a, _Flight)}.values())
        landed = dict(zip(map(id, flights), await _awaited(flights), strict=True))
        outcomes: list[LegacyOutcome] = []
        for key in keys:
            answer = answers[key]
            if isinstance(answer, Entry):
                outcomes.append(_found_or_missing(key, answer.status))
                continue
            batch = landed[id(answer)]
            if isinstance(batch, GatewayError):
                outcomes.append(batch)  # the flight failed: every ad it read fails
            else:
                outcomes.append(_found_or_missing(key, batch.found.get(key.ad_id)))
        return outcomes

    def _take_off(self, user_id: int, ad_ids: list[int]) -> _Flight:
        flight = _Flight(user_id, tuple(ad_ids), self.next_order())
        self.stats.misses += len(ad_ids)
        self.stats.reads += 1
        flight.task = asyncio.ensure_future(self._fly(flight))
        flight.task.add_done_callback(functools.partial(self._landed, flight))
        for ad_id in ad_ids:
            self._flights[LegacyAdKey(user_id, ad_id)] = flight
        return flight

    async def _fly(self, flight: _Flight) -> LegacyBatch:
        # Other requests join this read: it runs under the upstream's own deadline, not the
        # first caller's (each caller still stops waiting at its own).
        with without_caller_deadline():
            return await self.load(flight.user_id, flight.ad_ids, flight.order)

    async def load(self, user_id: int, ad_ids: Sequence[int], order: int) -> LegacyBatch:
        """A flight's read: the legacy API, its answer stored. The Redis layer looks there
        first and lets one replica read for all."""
        batch = await self.reader.ads_status(user_id, ad_ids)
        self.keep(batch, ad_ids, order)
        return batch

    def _landed(self, flight: _Flight, task: asyncio.Task[Any]) -> None:
        for ad_id in flight.ad_ids:
            key = LegacyAdKey(flight.user_id, ad_id)
            if self._flights.get(key) is flight:
                del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _read_by_user(
        self, keys: Sequence[LegacyAdKey], *, force: bool
    ) -> list[LegacyOutcome]:
        """Each user's ads in one read of this request's own (no entry is consulted)."""
        by_user: dict[int, list[int]] = defaultdict(list)
        for key in keys:
            by_user[key.user_id].append(key.ad_id)
        users = list(by_user)
        batches = await _together(
            self.ads_status(user, by_user[user], force=force) for user in users
        )
        answers = dict(zip(users, batches, strict=True))
        outcomes: list[LegacyOutcome] = []
        for key in keys:
            batch = answers[key.user_id]
            if isinstance(batch, GatewayError):
                outcomes.append(batch)  # the user's whole call failed
            else:
                outcomes.append(_found_or_missing(key, batch.found.get(key.ad_id)))
        return outcomes

    # --- reads anew -----------------------------------------------------------------------

    async def ads_status(
        self, user_id: int, ad_ids: Sequence[int], *, force: bool = False
    ) -> LegacyBatch:
        """Read these ads anew (never from the entries) and replace their entries with the
        answer: for `refreshListing` and the legacy poller. A `LegacyReader` itself."""
        order = self.next_order()
        batch = await self.reader.ads_status(user_id, ad_ids, force=force)
        self.stats.refreshed += len(batch.found) + len(batch.missing)
        await self.replace(batch, ad_ids, order)
        return batch

    async def replace(self, batch: LegacyBatch, ad_ids: Sequence[int], order: int) -> None:
        """Store a read anew; the Redis layer stores it there too."""
        self.keep(batch, ad_ids, order)

    def keep(
        self,
        batch: LegacyBatch,
        ad_ids: Iterable[int],
        order: int,
        *,
        stored_at: float | None = None,
    ) -> None:
        """Store what `batch` says of each of `ad_ids` (found, or missing), unless a read that
        began later stored its answer already. `stored_at` backdates entries read from
        elsewhere (Redis), so they age from when they were read."""
        if self._entries is None:
            return
        now = self.timer() if stored_at is None else stored_at
        for ad_id in ad_ids:
            if ad_id not in batch.found and ad_id not in batch.missing:
                continue  # not asked in that read after all
            self.keep_one(LegacyAdKey(batch.user_id, ad_id), batch.found.get(ad_id), now, order)

    def keep_one(
        self, key: LegacyAdKey, status: LegacyAdStatus | None, stored_at: float, order: int
    ) -> None:
        if self._entries is None:
            return
        kept = self._entries.get(key)
        if kept is not None and kept.order > order:
            self.stats.overtaken += 1
            return
        self._entries[key] = Entry(status, stored_at, order)
        self.stats.stored += 1

    def clear(self) -> None:
        """Forget every entry (reads in flight still answer their waiters)."""
        if self._entries is not None:
            self._entries.clear()


def missing_ad(key: LegacyAdKey) -> UpstreamNotFound:
    return UpstreamNotFound(
        f"legacy ad {key.ad_id} of user {key.user_id} not found", upstream="legacy"
    )


def _found_or_missing(key: LegacyAdKey, status: LegacyAdStatus | None) -> LegacyOutcome:
    return status if status is not None else missing_ad(key)


async def _awaited(flights: list[_Flight]) -> list[LegacyBatch | GatewayError]:
    """Each flight's batch or failure. Shielded: a caller that gives up (cancelled) must not
    cancel a read others wait for."""
    reads = []
    for flight in flights:
        assert flight.task is not None
        reads.append(asyncio.shield(flight.task))
    return await _together(reads)


async def _together(reads: Iterable[Any]) -> list[Any]:
    """Each read's outcome (a `GatewayError` instead of raising); no task for a single read."""
    pending = list(reads)
    if len(pending) == 1:
        return [await capture(pending[0])]
    return list(await asyncio.gather(*(capture(read) for read in pending)))


__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "Entry",
    "LegacyCacheStats",
    "LegacyOutcome",
    "LegacyReader",
    "LegacyStatusCache",
    "missing_ad",
]
