"""Legacy polling across replicas: one replica per legacy user polls the ads all of them watch.

`RedisPollShare` is the poller's `PollShare` with Redis: each replica adds the ads it
watches to a per-user sorted set (one member per ad and replica, scored with an expiry it
refreshes at every poll), and holds a lease per user (`SET NX PX`, renewed at every poll)
to poll that user's ads — every replica's. A replica that dies stops renewing: its lease and
its watches expire after three intervals and another replica takes the user over; one that
stops cleanly lets its leases go at once. Snapshots are kept in Redis too, so the new holder
compares with what the old one saw. With Redis away, each replica polls what it watches
(the same user may then be polled by several) and keeps its snapshots in process.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Collection, Mapping

import orjson
import redis.asyncio as aioredis

from gateway.infra.redis_link import RedisDown, RedisLink
from gateway.live.poller import LocalPollShare, Snapshot

# KEYS: lease, watches of the user. ARGV: me, lease ms, now ms.
# Returns the ads watched anywhere (members "<ad>:<replica>" not yet expired) when this
# replica holds (or takes) the lease; else nil. With nothing watched, lets the lease go.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
local members = redis.call('ZRANGE', KEYS[2], 0, -1)
if #members == 0 then
  if holder then redis.call('DEL', KEYS[1]) end
  return false
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return members
"""
# KEYS: leases. ARGV: me. Lets go of the leases this replica holds.
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


class RedisPollShare:
    """One poller per legacy user across replicas (see the module docstring)."""

    def __init__(
        self,
        link: RedisLink,
        *,
        interval_s: float,
        retention_s: float,
        wall: Callable[[], float] = time.time,
        replica: str | None = None,
    ) -> None:
        self.link = link
        self.replica = replica or secrets.token_hex(6)
        # A lease and a watch last three intervals: one late poll does not move them.
        self.lease_ms = max(1, round(3 * interval_s * 1000))
        self.retention_ms = max(1, round(retention_s * 1000))
        self.local = LocalPollShare(retention_s=retention_s)
        self.held: set[int] = set()  # users whose lease this replica held at the last claim
        self._wall = wall
        self._published: dict[int, frozenset[int]] = {}
        self._claim = link.client.register_script(_CLAIM)
        self._release = link.client.register_script(_RELEASE)

    def _users(self) -> str:
        return self.link.key("legacywatch", "users")

    def _watches(self, user: int) -> str:
        return self.link.key("legacywatch", str(user))

    def _lease(self, user: int) -> str:
        return self.link.key("legacypoll", str(user))

    def _snapshots(self, user: int) -> str:
        return self.link.key("legacysnap", str(user))

    async def claim(self, watched: Mapping[int, frozenset[int]]) -> dict[int, frozenset[int]]:
        now_ms = round(self._wall() * 1000)
        expiry = now_ms + self.lease_ms
        gone = {user: ads - watched.get(user, frozenset()) for user, ads in self._published.items()}

        async def run(r: aioredis.Redis) -> dict[int, frozenset[int]]:
            async with r.pipeline(transaction=False) as pipe:
                for user, ads in watched.items():
                    if ads:
                        pipe.zadd(
                            self._watches(user), {f"{ad}:{self.replica}": expiry for ad in ads}
                        )
                        pipe.zadd(self._users(), {str(user): expiry})
                for user, ads in gone.items():
                    if ads:
                        pipe.zrem(self._watches(user), *(f"{ad}:{self.replica}" for ad in ads))
                pipe.zremrangebyscore(self._users(), "-inf", now_ms)
                pipe.zrange(self._users(), 0, -1)
                answers = await pipe.execute()
            users = [int(_text(user)) for user in answers[-1]]
            async with r.pipeline(transaction=False) as pipe:
                for user in users:
                    await self._claim(
                        keys=[self._lease(user), self._watches(user)],
                        args=[self.replica, self.lease_ms, now_ms],
                        client=pipe,
                    )
                claims = await pipe.execute()
            mine: dict[int, frozenset[int]] = {}
            for user, members in zip(users, claims, strict=True):
                if members:
                    mine[user] = frozenset(int(_text(m).split(":", 1)[0]) for m in members)
            return mine

        try:
            mine = await self.link.run(run)
        except RedisDown:
            # Alone: poll what this replica watches (other replicas may poll it too).
            self.held = set()
            return dict(watched)
        self._published = dict(watched)
        self.held = set(mine)
        return mine

    async def snapshots(self, user: int, ads: Collection[int]) -> dict[int, Snapshot]:
        asked = sorted(ads)
        if not asked:
            return {}
        try:
            values = await self.link.run(lambda r: r.hmget(self._snapshots(user), asked))
        except RedisDown:
            return self.local.kept(user, asked)
        found: dict[int, Snapshot] = {}
        for ad, value in zip(asked, values, strict=True):
            if value is not None:
                found[ad] = orjson.loads(value)
        return found

    async def store(
        self, user: int, snapshots: Mapping[int, Snapshot], *, only_new: bool = False
    ) -> None:
        self.local.keep(user, snapshots, only_new=only_new)
        if not snapshots:
            return
        key = self._snapshots(user)

        async def run(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for ad, snapshot in snapshots.items():
                    value = orjson.dumps(snapshot)
                    if only_new:
                        pipe.hsetnx(key, str(ad), value)
                    else:
                        pipe.hset(key, str(ad), value)
                pipe.pexpire(key, self.retention_ms)
                await pipe.execute()

        with contextlib.suppress(RedisDown):
            await self.link.run(run)

    async def release(self) -> None:
        leases = [self._lease(user) for user in self.held]
        watches = {user: ads for user, ads in self._published.items() if ads}

        async def run(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=False) as pipe:
                if leases:
                    await self._release(keys=leases, args=[self.replica], client=pipe)
                for user, ads in watches.items():
                    pipe.zrem(self._watches(user), *(f"{ad}:{self.replica}" for ad in ads))
                await pipe.execute()

        if leases or watches:
            with contextlib.suppress(RedisDown):
                await self.link.run(run)
        self.held = set()
        self._published = {}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
