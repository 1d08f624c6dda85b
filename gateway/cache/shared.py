"""The V3 page cache shared by replicas through Redis, with an in-process layer in front.

`SharedPageCache` is a `PageCache` (the in-process layer: single-flight per replica, a
short TTL) whose loads look in Redis before they call V3, and store what V3 answered there
with the cache TTL as Redis expiry. Keys keep the tenant, so one agency's pages never reach
another on any replica. Pages are stored as JSON by pydantic from the domain dataclasses
(compact, and nothing executable is ever read back from Redis, unlike pickle).

Concurrent misses on one page are single-flight per replica (the in-process layer), and
across replicas through a short Redis lock: the replica that takes it (`SET NX PX`, as long
as one upstream operation may last, with a random token) reads V3 and stores the page; a
replica that finds the lock taken marks that it waits and sleeps until the holder lets go
(its release, a compare-and-delete script, publishes the page's name when someone waits;
the event bus's listener hears it) or until half of its own deadline has passed, then reads
the page from Redis, or V3 itself if the page did not come (holder slow, failed or gone).

Dropping a classified drops it here and in Redis (through a per-classified hash of its
page keys, so no scan); other replicas drop their in-process layer when the event reaches
them over the event bus (`drop_local`). A load that was overtaken by a drop of its own
classified (and tenant) while it ran does not store its page in Redis; loads of other
classifieds store theirs, so a steady stream of webhooks for some classifieds does not keep
every other page out of Redis. With Redis away every call falls through to V3 and the
in-process layer, and the layer is emptied when Redis comes back (drops may have been missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError

from gateway.cache.pages import PageCache, PageKey
from gateway.domain.models import ClassifiedStatusItem, MediaStatusItem, StatusPage
from gateway.infra.deadlines import caller_deadline_at
from gateway.infra.redis_link import RedisDown, RedisLink

log = logging.getLogger(__name__)

# How long a replica keeps a page in process at most: short, so that a page another
# replica replaced in Redis (a refresh) is not served here for long. A page read from Redis
# late in its life is kept only until the TTL the first replica gave it.
LOCAL_TTL_S: Final = 5.0

# A page and its time left (PTTL), which tells how long ago V3 answered it.
_READ: Final = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"
# Takes a miss's turn in one step: the page (and its time left) if it is there by now, else
# the lock, else a "someone waits" mark (so the holder's release knows to publish) and the
# lock's time left.
_TAKE_TURN: Final = """
local page = redis.call('GET', KEYS[3])
if page then return {2, page, redis.call('PTTL', KEYS[3])} end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return {0, redis.call('PTTL', KEYS[1])}
"""
# Lets the lock go if it is still ours, and wakes the waiters if there are any.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('DEL', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 0
"""

_PAGES: Final[dict[str, TypeAdapter[Any]]] = {
    "classified": TypeAdapter(StatusPage[ClassifiedStatusItem]),
    "media": TypeAdapter(StatusPage[MediaStatusItem]),
}


@dataclass(eq=False, slots=True)
class _Load:
    """One load in flight towards Redis; `overtaken` once a drop of its page arrived."""

    tenant: str
    overtaken: bool = False


@dataclass(slots=True)
class SharedStats:
    """What the Redis layer did, for tests and metrics."""

    hits: int = 0  # pages read from Redis instead of V3
    misses: int = 0  # loads that found nothing in Redis
    stored: int = 0
    unavailable: int = 0  # loads that went to V3 because Redis did not answer
    lock_wins: int = 0  # misses that took the page's lock and read V3 for every replica
    lock_waits: int = 0  # misses that found the lock taken and waited for the page
    lock_woken: int = 0  # waits ended by the holder letting go (not by their bound)
    lock_timeouts: int = 0  # waits that ended without the page: read V3 after all
    overtaken: int = 0  # loads not stored because a drop of their classified came meanwhile


class SharedPageCache(PageCache[Any]):
    """`PageCache` in process, Redis behind it, V3 behind that."""

    def __init__(
        self,
        link: RedisLink,
        *,
        ttl_s: float,
        max_local_entries: int,
        local_ttl_s: float = LOCAL_TTL_S,
        stale_s: float = 0.0,
        lock_s: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """`lock_s` bounds one upstream operation (`GATEWAY_UPSTREAM_TIMEOUT_S`): how long a
        page's lock lasts, and twice the longest wait for a page another replica reads."""
        if ttl_s <= 0:
            raise ValueError("a shared cache needs a positive TTL")
        # Stale-if-error stays per replica: the in-process layer keeps its last good pages.
        super().__init__(
            ttl_s=min(ttl_s, local_ttl_s),
            max_entries=max_local_entries,
            timer=timer,
            stale_s=stale_s + max(0.0, ttl_s - local_ttl_s),
        )
        self.link = link
        self.shared_ttl_s = ttl_s
        self.shared_ttl_ms = max(1, round(ttl_s * 1000))
        # How long ago V3 answered the page a load just read from Redis, for `_stamps`.
        self._ages: dict[PageKey, float] = {}
        self.shared = SharedStats()
        self.lock_s = lock_s
        self.fill_channel = link.key("v3filled")
        self._take_turn = link.client.register_script(_TAKE_TURN)
        self._read_page = link.client.register_script(_READ)
        # page name -> set when the replica holding its lock lets go.
        self._waiting: dict[str, asyncio.Event] = {}
        # classified id -> its loads in flight; a drop marks them, and they do not store.
        self._loads: dict[str, set[_Load]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        link.on_recovered(self.clear)

    def page_name(self, key: PageKey) -> str:
        """The Redis key of a page: its classified, then a digest of every other field."""
        fields = [key.tenant, key.kind, key.classified_id, key.media_id, key.params, key.next_token]
        digest = hashlib.sha256(orjson.dumps(fields)).hexdigest()[:32]
        return self.link.key("v3page", key.classified_id, digest)

    def index_name(self, classified_id: str) -> str:
        return self.link.key("v3index", classified_id)

    def lock_names(self, page_name: str) -> tuple[str, str]:
        """The Redis keys of a page's lock and of its "someone waits" mark."""
        tail = page_name.removeprefix(self.link.key("v3page", ""))
        return self.link.key("v3lock", tail), self.link.key("v3wait", tail)

    def filled(self, page_name: bytes | str) -> None:
        """The replica holding `page_name`'s lock let go (heard on `fill_channel`)."""
        woken = self._waiting.get(_text(page_name))
        if woken is not None:
            woken.set()

    async def get_or_load(
        self, key: PageKey, load: Callable[[], Awaitable[Any]], *, refresh: bool = False
    ) -> Any:
        return await super().get_or_load(
            key, lambda: self._through_redis(key, load, refresh), refresh=refresh
        )

    async def _through_redis(
        self, key: PageKey, load: Callable[[], Awaitable[Any]], refresh: bool
    ) -> Any:
        adapter = _PAGES.get(key.kind)
        if adapter is None:
            return await load()
        name = self.page_name(key)
        token = None
        if not refresh:
            try:
                raw, left_ms = await self._get(name)
            except RedisDown:
                self.shared.unavailable += 1
            else:
                page = self._read(key, name, raw, left_ms, adapter)
                if page is not None:
                    return page
                self.shared.misses += 1
                page, token = await self._miss(key, name, adapter)
                if page is not None:
                    return page
        flight = self._begin(key)
        try:
            try:
                page = await load()
            except BaseException:
                if token is not None:
                    self._spawn(self._release(name, token))
                raise
            if not flight.overtaken:
                await self._store(key, name, adapter.dump_json(page, exclude_defaults=True), token)
            else:
                self.shared.overtaken += 1
                if token is not None:
                    await self._release(name, token)
        finally:
            self._end(key, flight)
        return page

    def _begin(self, key: PageKey) -> _Load:
        flight = _Load(key.tenant)
        self._loads.setdefault(key.classified_id, set()).add(flight)
        return flight

    def _end(self, key: PageKey, flight: _Load) -> None:
        loads = self._loads.get(key.classified_id)
        if loads is not None:
            loads.discard(flight)
            if not loads:
                del self._loads[key.classified_id]

    def _overtake(self, classified_id: str | None, tenant: str | None = None) -> None:
        """Mark the loads in flight of `classified_id` (None: of every classified)."""
        groups = (
            self._loads.values()
            if classified_id is None
            else [self._loads.get(classified_id, set())]
        )
        for loads in groups:
            for flight in loads:
                if tenant is None or flight.tenant == tenant:
                    flight.overtaken = True

    def _stamps(self, key: PageKey, now: float) -> tuple[float, float]:
        """A page read from Redis was read from V3 `age` seconds ago (by any replica): it
        stays fresh here for the in-process TTL at most, and never past the shared TTL."""
        read_at = now - self._ages.pop(key, 0.0)
        return read_at, min(now + self._ttl_s, read_at + self.shared_ttl_s)

    async def _get(self, name: str) -> tuple[bytes | None, int]:
        """The page stored under `name` (None if none) and its time left in ms."""
        raw, left_ms = await self.link.run(lambda r: self._read_page(keys=[name], client=r))
        return raw, int(left_ms)

    def _read(
        self,
        key: PageKey,
        name: str,
        raw: bytes | str | None,
        left_ms: int,
        adapter: TypeAdapter[Any],
    ) -> Any:
        """The page in `raw` (counted as a hit, its age noted for `_stamps`), or None."""
        if raw is None:
            return None
        try:
            page = adapter.validate_json(raw)
        except ValidationError:
            log.warning("unreadable page in Redis under %s: loading it again", name)
            return None
        self.shared.hits += 1
        if left_ms >= 0:  # -1: stored without expiry, by something else than a replica
            self._ages[key] = max(0, self.shared_ttl_ms - left_ms) / 1000
        return page

    async def _miss(
        self, key: PageKey, name: str, adapter: TypeAdapter[Any]
    ) -> tuple[Any, str | None]:
        """After a miss: (the page, None) if another replica stored it meanwhile, (None,
        token) if this replica holds the page's lock now, (None, None) to read V3 alone."""
        token = secrets.token_hex(16)
        lock, waiting = self.lock_names(name)
        woken = asyncio.Event()
        # Registered before the lock is asked for, so a release heard at once is not lost.
        self._waiting[name] = woken
        try:
            try:
                turn = await self.link.run(
                    lambda r: self._take_turn(
                        keys=[lock, waiting, name], args=[token, self._lock_ms()], client=r
                    )
                )
            except RedisDown:
                self.shared.unavailable += 1
                return None, None
            if turn[0] == 1:
                self.shared.lock_wins += 1
                return None, token
            if turn[0] == 2:
                return self._read(key, name, turn[1], int(turn[2]), adapter), None
            self.shared.lock_waits += 1
            lock_left_s = turn[1] / 1000 if turn[1] > 0 else self.lock_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(lock_left_s, self._wait_budget())):
                    await woken.wait()
                    self.shared.lock_woken += 1
        finally:
            self._waiting.pop(name, None)
        try:
            raw, left_ms = await self._get(name)
        except RedisDown:
            self.shared.unavailable += 1
            raw, left_ms = None, -2
        page = self._read(key, name, raw, left_ms, adapter)
        if page is None:
            self.shared.lock_timeouts += 1
        return page, None

    def _lock_ms(self) -> int:
        return max(1, round(self.lock_s * 1000))

    def _wait_budget(self) -> float:
        """Half the time left to this operation's deadline (`lock_s`, or the caller's own
        if sooner): the other half is for reading V3 if the page does not come."""
        now = asyncio.get_running_loop().time()
        until = now + self.lock_s
        caller_at = caller_deadline_at()
        if caller_at is not None:
            until = min(until, caller_at)
        return max(0.0, until - now) / 2

    async def _store(self, key: PageKey, name: str, data: bytes, token: str | None) -> None:
        index = self.index_name(key.classified_id)

        async def store(client: aioredis.Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(name, data, px=self.shared_ttl_ms)
                pipe.hset(index, name, key.tenant)
                pipe.pexpire(index, self.shared_ttl_ms)
                if token is not None:  # after the page: a woken waiter finds it
                    pipe.eval(_RELEASE, 2, *self.lock_names(name), token, self.fill_channel, name)
                await pipe.execute()

        try:
            await self.link.run(store)
        except RedisDown:
            self.shared.unavailable += 1
        else:
            self.shared.stored += 1

    async def _release(self, name: str, token: str) -> None:
        """Let the page's lock go without a page (the read failed or was overtaken)."""
        lock, waiting = self.lock_names(name)
        with contextlib.suppress(RedisDown):  # it expires by itself
            await self.link.run(
                lambda r: r.eval(_RELEASE, 2, lock, waiting, token, self.fill_channel, name)
            )

    def drop_classified(self, classified_id: str, tenant: str | None = None) -> int:
        """Drop the classified's pages here at once and in Redis in the background."""
        dropped = self.drop_local(classified_id, tenant)
        self._spawn(self.drop_shared(classified_id, tenant))
        return dropped

    def drop_local(self, classified_id: str, tenant: str | None = None) -> int:
        """Drop the classified's pages from this replica's in-process layer only."""
        self._overtake(classified_id, tenant)
        return super().drop_classified(classified_id, tenant)

    def clear(self) -> None:
        self._overtake(None)
        super().clear()

    async def drop_shared(self, classified_id: str, tenant: str | None = None) -> int:
        """Drop the classified's pages from Redis; how many were there (0 if Redis is away)."""
        index = self.index_name(classified_id)

        async def drop(client: aioredis.Redis) -> int:
            pages = await client.hgetall(index)
            doomed = [
                name for name, owner in pages.items() if tenant is None or _text(owner) == tenant
            ]
            if not doomed:
                return 0
            async with client.pipeline(transaction=False) as pipe:
                pipe.delete(*doomed)
                pipe.hdel(index, *doomed)
                deleted, _ = await pipe.execute()
            return int(deleted)

        try:
            return await self.link.run(drop)
        except RedisDown:
            return 0

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait for the Redis drops still running."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
