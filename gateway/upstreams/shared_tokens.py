"""V3 OAuth tokens shared by replicas through Redis, one per agency.

The token's `Authorization` value lives under the agency's key with its freshness as Redis
expiry; a redis-py `Lock` per agency (expiring by itself, so a replica that dies holding it
cannot block the others) decides which replica asks the token endpoint. Redis holds live
bearer tokens: it must be as private as the gateway's own settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from gateway.infra.redis_link import RedisDown, RedisLink

# Longest one replica may hold an agency's claim: a token fetch with its retries.
CLAIM_S: Final = 10.0


class RedisTokenStore:
    """`gateway.upstreams.v3_auth.TokenStore` on a `RedisLink`."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def _name(self, agency: str) -> str:
        return self.link.key("v3token", agency)

    async def get(self, agency: str) -> tuple[str, float] | None:
        name = self._name(agency)

        async def read(client: aioredis.Redis) -> tuple[bytes | None, int]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                header, pttl = await pipe.execute()
            return header, int(pttl)

        try:
            header, pttl = await self.link.run(read)
        except RedisDown:
            return None
        if header is None or pttl <= 0:
            return None
        return header.decode(), pttl / 1000

    async def put(self, agency: str, header: str, fresh_s: float) -> None:
        if fresh_s <= 0:
            return
        name = self._name(agency)
        with contextlib.suppress(RedisDown):
            await self.link.run(lambda r: r.set(name, header, px=max(1, int(fresh_s * 1000))))

    @asynccontextmanager
    async def claim(self, agency: str) -> AsyncIterator[bool]:
        lock = Lock(self.link.client, self.link.key("v3token-claim", agency), timeout=CLAIM_S)

        async def release(client: aioredis.Redis) -> None:
            with contextlib.suppress(LockError):  # expired meanwhile: nothing to release
                await lock.release()

        try:
            held = bool(await self.link.run(lambda r: lock.acquire(blocking=False)))
        except RedisDown:
            yield True  # nobody to agree with: fetch alone
            return
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(RedisDown):  # it expires by itself
                    await self.link.run(release)
