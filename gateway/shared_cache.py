"""The V3 page cache shared by replicas through Redis, with an in-process layer in front.

`SharedPageCache` is a `PageCache` (the in-process layer: single-flight per replica, a
short TTL) whose loads look in Redis before they call V3, and store what V3 answered there
with the cache TTL as Redis expiry. Keys keep the tenant, so one agency's pages never reach
another on any replica. Pages are stored as JSON by pydantic from the domain dataclasses
(compact, and nothing executable is ever read back from Redis, unlike pickle).

Dropping a classified drops it here and in Redis (through a per-classified hash of its
page keys, so no scan); other replicas drop their in-process layer when the event reaches
them over the event bus (`drop_local`). A load that was overtaken by a drop while it ran
does not store its page in Redis. With Redis away every call falls through to V3 and the
in-process layer, and the layer is emptied when Redis comes back (drops may have been missed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError

from gateway.cache import PageCache, PageKey
from gateway.models import ClassifiedStatusItem, MediaStatusItem, StatusPage
from gateway.redis_link import RedisDown, RedisLink

log = logging.getLogger(__name__)

# How long a replica keeps a page in process: short, so that a page read from Redis late
# in its life is not kept much past the TTL the first replica gave it.
LOCAL_TTL_S: Final = 5.0

_PAGES: Final[dict[str, TypeAdapter[Any]]] = {
    "classified": TypeAdapter(StatusPage[ClassifiedStatusItem]),
    "media": TypeAdapter(StatusPage[MediaStatusItem]),
}


@dataclass(slots=True)
class SharedStats:
    """What the Redis layer did, for tests and metrics."""

    hits: int = 0  # pages read from Redis instead of V3
    misses: int = 0  # loads that found nothing in Redis
    stored: int = 0
    unavailable: int = 0  # loads that went to V3 because Redis did not answer


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
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
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
        self.shared_ttl_ms = max(1, round(ttl_s * 1000))
        self.shared = SharedStats()
        # Bumped by every drop: a load that saw it move does not store what it read.
        self._epoch = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        link.on_recovered(self.clear)

    def page_name(self, key: PageKey) -> str:
        """The Redis key of a page: its classified, then a digest of every other field."""
        fields = [key.tenant, key.kind, key.classified_id, key.media_id, key.params, key.next_token]
        digest = hashlib.sha256(orjson.dumps(fields)).hexdigest()[:32]
        return self.link.key("v3page", key.classified_id, digest)

    def index_name(self, classified_id: str) -> str:
        return self.link.key("v3index", classified_id)

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
        if not refresh:
            try:
                raw = await self.link.run(lambda r: r.get(name))
            except RedisDown:
                self.shared.unavailable += 1
                raw = None
            else:
                if raw is not None:
                    try:
                        page = adapter.validate_json(raw)
                    except ValidationError:
                        log.warning("unreadable page in Redis under %s: loading it again", name)
                    else:
                        self.shared.hits += 1
                        return page
                self.shared.misses += 1
        epoch = self._epoch
        page = await load()
        if epoch == self._epoch:
            await self._store(key, name, adapter.dump_json(page, exclude_defaults=True))
        return page

    async def _store(self, key: PageKey, name: str, data: bytes) -> None:
        index = self.index_name(key.classified_id)

        async def store(client: aioredis.Redis) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(name, data, px=self.shared_ttl_ms)
                pipe.hset(index, name, key.tenant)
                pipe.pexpire(index, self.shared_ttl_ms)
                await pipe.execute()

        try:
            await self.link.run(store)
        except RedisDown:
            self.shared.unavailable += 1
        else:
            self.shared.stored += 1

    def drop_classified(self, classified_id: str, tenant: str | None = None) -> int:
        """Drop the classified's pages here at once and in Redis in the background."""
        dropped = self.drop_local(classified_id, tenant)
        self._spawn(self.drop_shared(classified_id, tenant))
        return dropped

    def drop_local(self, classified_id: str, tenant: str | None = None) -> int:
        """Drop the classified's pages from this replica's in-process layer only."""
        self._epoch += 1
        return super().drop_classified(classified_id, tenant)

    def clear(self) -> None:
        self._epoch += 1
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
