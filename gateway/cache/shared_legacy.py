"""Legacy ad statuses shared by replicas through Redis, with the in-process cache in front.

`SharedLegacyStatusCache` is a `LegacyStatusCache` (single-flight per replica) whose flights
look in Redis before they ask the legacy API, and store what it answered there with the TTL
as Redis expiry, so a board open on every replica costs one read per chunk, not one per
replica. Entries are JSON (a status, or `null` for "no such ad"); nothing executable is ever
read back from Redis.

Across replicas a flight is single-flight per ad, in one script for all its ads: each ad's
entry if Redis has it (with its time left, so it ages here as it does there), else its lock
(`SET NX PX`, a random token, as long as one upstream operation may last), else "another
replica reads it". The flight reads the ads whose locks it took in one batch, then stores
each answer only while the ad's lock is still its own and lets the locks go (one more
script). The ads another replica reads are looked for again after a few milliseconds,
then at growing intervals, until they are there or half the lock time has passed; any
that did not come are read here (the holder was slow, failed or died).

Reads anew (`refreshListing`, the legacy poller) store their answers and take the ads'
locks away, so a plain read that began before them and lands after does not store its
older answer, here or in Redis.

Names carry the legacy client's scope (a digest of its URL and key): gateways reading with
another key never share an entry. With Redis away every flight reads the legacy API and
keeps its answers in process: Redis never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError

from gateway.cache.legacy import DEFAULT_MAX_ENTRIES, LegacyReader, LegacyStatusCache
from gateway.domain.models import LegacyAdKey, LegacyAdStatus, LegacyBatch
from gateway.infra.redis_link import RedisDown, RedisLink

log = logging.getLogger(__name__)

_STATUS: Final = TypeAdapter(LegacyAdStatus | None)
# When a replica waiting for another's read looks in Redis again: soon (a legacy read takes
# tens of milliseconds), then less often. Looking costs one small Redis call.
_FIRST_LOOK_S: Final = 0.005
_LAST_LOOK_S: Final = 0.05

# KEYS: the ads' entries, then their locks. ARGV: token, lock ms.
# Per ad: {2, entry, ms left} when Redis has it, {1} when this flight took its lock, else {0}.
_TAKE: Final = """
local n = #KEYS / 2
local turns = {}
for i = 1, n do
  local entry = redis.call('GET', KEYS[i])
  if entry then
    turns[i] = {2, entry, redis.call('PTTL', KEYS[i])}
  elseif redis.call('SET', KEYS[n + i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    turns[i] = {1}
  else
    turns[i] = {0}
  end
end
return turns
"""
# KEYS: entries, then their locks. ARGV: token, TTL ms, then each entry's value.
# Stores an answer only while its lock is still this flight's, and lets the lock go.
_STORE: Final = """
local n = #KEYS / 2
local stored = 0
for i = 1, n do
  if redis.call('GET', KEYS[n + i]) == ARGV[1] then
    redis.call('SET', KEYS[i], ARGV[i + 2], 'PX', ARGV[2])
    redis.call('DEL', KEYS[n + i])
    stored = stored + 1
  end
end
return stored
"""
# KEYS: locks. ARGV: token. Lets go of the locks still held (the read failed).
_RELEASE: Final = """
for _, lock in ipairs(KEYS) do
  if redis.call('GET', lock) == ARGV[1] then redis.call('DEL', lock) end
end
return 0
"""
# KEYS: entries, then their locks. ARGV: TTL ms, then each entry's value.
# A read anew: its answers replace the entries, and the locks of older reads go.
_REPLACE: Final = """
local n = #KEYS / 2
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[1])
  redis.call('DEL', KEYS[n + i])
end
return n
"""


@dataclass(slots=True)
class SharedLegacyStats:
    """What the Redis layer did, per ad, for tests and metrics."""

    hits: int = 0  # answered from Redis instead of the legacy API
    lock_wins: int = 0  # read here for every replica
    lock_waits: int = 0  # found another replica reading them and waited
    lock_timeouts: int = 0  # waited, did not come: read here after all
    stored: int = 0  # answers stored in Redis (plain reads and reads anew)
    unavailable: int = 0  # Redis calls that failed: carried on in process


class SharedLegacyStatusCache(LegacyStatusCache):
    """`LegacyStatusCache` in process, Redis behind it, the legacy API behind that."""

    def __init__(
        self,
        reader: LegacyReader,
        link: RedisLink,
        *,
        scope: str,
        ttl_s: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        lock_s: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """`scope` names who reads (the legacy client's `scope`); `lock_s` bounds one
        upstream operation (`GATEWAY_UPSTREAM_TIMEOUT_S`): how long an ad's lock lasts."""
        if ttl_s <= 0:
            raise ValueError("a shared legacy cache needs a positive TTL")
        super().__init__(reader, ttl_s=ttl_s, max_entries=max_entries, timer=timer)
        self.link = link
        self.scope = scope
        self.lock_s = lock_s
        self.shared = SharedLegacyStats()
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._lock_ms = max(1, round(lock_s * 1000))
        self._take = link.client.register_script(_TAKE)
        self._store = link.client.register_script(_STORE)
        self._release = link.client.register_script(_RELEASE)
        self._replace = link.client.register_script(_REPLACE)

    def entry_name(self, user_id: int, ad_id: int) -> str:
        return self.link.key("legacyad", self.scope, str(user_id), str(ad_id))

    def lock_name(self, user_id: int, ad_id: int) -> str:
        return self.link.key("legacylock", self.scope, str(user_id), str(ad_id))

    def _names(self, user_id: int, ad_ids: Sequence[int]) -> list[str]:
        entries = [self.entry_name(user_id, ad_id) for ad_id in ad_ids]
        return entries + [self.lock_name(user_id, ad_id) for ad_id in ad_ids]

    # --- a flight: Redis first, one replica reads -----------------------------------------

    async def load(self, user_id: int, ad_ids: Sequence[int], order: int) -> LegacyBatch:
        token = secrets.token_hex(16)
        try:
            turns = await self.link.run(
                lambda r: self._take(
                    keys=self._names(user_id, ad_ids), args=[token, self._lock_ms], client=r
                )
            )
        except RedisDown:
            self.shared.unavailable += 1
            return await super().load(user_id, ad_ids, order)
        answers: dict[int, LegacyAdStatus | None] = {}
        won: list[int] = []
        others: list[int] = []
        now = self.timer()
        for ad_id, turn in zip(ad_ids, turns, strict=True):
            kind = int(turn[0])
            if kind == 2:
                status = self._decode(user_id, ad_id, turn[1])
                if not isinstance(status, _Unreadable):
                    self.shared.hits += 1
                    answers[ad_id] = status
                    # Aged as in Redis: it expires here when it expires there.
                    left_s = max(0, int(turn[2])) / 1000
                    stored_at = now - max(0.0, self.ttl_s - left_s)
                    self.keep_one(LegacyAdKey(user_id, ad_id), status, stored_at, order)
                    continue
                others.append(ad_id)
            elif kind == 1:
                won.append(ad_id)
            else:
                others.append(ad_id)
        self.shared.lock_wins += len(won)
        self.shared.lock_waits += len(others)
        read, waited = await asyncio.gather(
            self._read_for_all(user_id, won, token, order),
            self._await_others(user_id, others, order),
            return_exceptions=True,
        )
        for part in (read, waited):
            if isinstance(part, BaseException):
                raise part
            answers.update(part)
        late = [ad_id for ad_id in others if ad_id not in answers]
        if late:
            self.shared.lock_timeouts += len(late)
            batch = await self.reader.ads_status(user_id, late)
            self.keep(batch, late, order)
            answers.update((ad_id, batch.found.get(ad_id)) for ad_id in late)
        return _batch(user_id, answers)

    async def _read_for_all(
        self, user_id: int, ad_ids: list[int], token: str, order: int
    ) -> dict[int, LegacyAdStatus | None]:
        """The ads whose locks this flight took: read, stored while still ours, let go."""
        if not ad_ids:
            return {}
        locks = [self.lock_name(user_id, ad_id) for ad_id in ad_ids]
        try:
            batch = await self.reader.ads_status(user_id, ad_ids)
        except BaseException:
            with contextlib.suppress(RedisDown):  # else they expire by themselves
                await self.link.run(lambda r: self._release(keys=locks, args=[token], client=r))
            raise
        self.keep(batch, ad_ids, order)
        values = [_STATUS.dump_json(batch.found.get(ad_id)) for ad_id in ad_ids]
        try:
            stored = await self.link.run(
                lambda r: self._store(
                    keys=self._names(user_id, ad_ids),
                    args=[token, self._ttl_ms, *values],
                    client=r,
                )
            )
        except RedisDown:
            self.shared.unavailable += 1
        else:
            self.shared.stored += int(stored)
        return {ad_id: batch.found.get(ad_id) for ad_id in ad_ids}

    async def _await_others(
        self, user_id: int, ad_ids: list[int], order: int
    ) -> dict[int, LegacyAdStatus | None]:
        """The ads another replica reads, as they arrive in Redis, within half the lock time
        (the other half is for reading them here if they do not come)."""
        got: dict[int, LegacyAdStatus | None] = {}
        pending = list(ad_ids)
        loop = asyncio.get_running_loop()
        until = loop.time() + self.lock_s / 2
        pause = _FIRST_LOOK_S
        while pending:
            left = until - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _LAST_LOOK_S)
            try:
                values = await self.link.run(
                    functools.partial(_mget, [self.entry_name(user_id, a) for a in pending])
                )
            except RedisDown:
                self.shared.unavailable += 1
                break
            now = self.timer()
            still: list[int] = []
            for ad_id, value in zip(pending, values, strict=True):
                status = _UNREADABLE if value is None else self._decode(user_id, ad_id, value)
                if isinstance(status, _Unreadable):
                    still.append(ad_id)
                    continue
                self.shared.hits += 1
                got[ad_id] = status
                self.keep_one(LegacyAdKey(user_id, ad_id), status, now, order)
            pending = still
        return got

    def _decode(self, user_id: int, ad_id: int, raw: Any) -> LegacyAdStatus | _Unreadable | None:
        """The entry in `raw`, or `_UNREADABLE` (then the ad is read again)."""
        try:
            status = _STATUS.validate_json(raw)
        except ValidationError:
            log.warning("unreadable legacy entry in Redis for ad %d of user %d", ad_id, user_id)
            return _UNREADABLE
        if status is not None and (status.user_id, status.ad_id) != (user_id, ad_id):
            log.warning("legacy entry in Redis for ad %d of user %d names another", ad_id, user_id)
            return _UNREADABLE
        return status

    # --- reads anew -----------------------------------------------------------------------

    async def replace(self, batch: LegacyBatch, ad_ids: Sequence[int], order: int) -> None:
        self.keep(batch, ad_ids, order)
        asked = [a for a in dict.fromkeys(ad_ids) if a in batch.found or a in batch.missing]
        if not asked:
            return
        values = [_STATUS.dump_json(batch.found.get(ad_id)) for ad_id in asked]
        user_id = batch.user_id

        async def replace(r: aioredis.Redis) -> Any:
            return await self._replace(
                keys=self._names(user_id, asked), args=[self._ttl_ms, *values], client=r
            )

        try:
            await self.link.run(replace)
        except RedisDown:
            self.shared.unavailable += 1
        else:
            self.shared.stored += len(asked)


class _Unreadable:
    """An entry in Redis that could not be read (then the ad is read again)."""


_UNREADABLE: Final = _Unreadable()


async def _mget(names: list[str], client: aioredis.Redis) -> list[Any]:
    return list(await client.mget(names))


def _batch(user_id: int, answers: dict[int, LegacyAdStatus | None]) -> LegacyBatch:
    found = {ad_id: status for ad_id, status in answers.items() if status is not None}
    missing = frozenset(ad_id for ad_id, status in answers.items() if status is None)
    return LegacyBatch(user_id=user_id, found=found, missing=missing)


__all__ = ["SharedLegacyStats", "SharedLegacyStatusCache"]
