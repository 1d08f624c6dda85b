"""The private redis-server the scale-out tests share: it starts, answers, stops, restarts."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_harness import RunningRedis


async def test_redis_server_answers_and_comes_back_after_a_restart(
    redis_server: RunningRedis,
) -> None:
    async with redis_server.client() as client:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    await redis_server.stop()
    async with redis_server.client() as client:
        with pytest.raises((RedisConnectionError, OSError)):
            await client.ping()
    await redis_server.start()
    async with aioredis.Redis.from_url(redis_server.url) as client:
        assert await client.ping()
        assert await client.get("k") is None  # nothing is persisted
