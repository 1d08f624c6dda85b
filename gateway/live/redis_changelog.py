"""Listing changes across replicas: the change log in a Redis stream, and the last known V3
portal states in Redis (the legacy poll's share is `gateway.live.redis_poller`).

`RedisChangeLog` is a `ChangeLog` every replica shares, so a client may resume on any of
them. Entries get consecutive ids (`<n>-0`, from a counter kept with the log's epoch in one
hash), which is how a gap is recognised: a cursor is expired exactly when the entry after it
is gone. Appending (a script: count, `XADD`, trim past the retention by Redis' own clock and
past the entry bound) and reading after a cursor (a script: check the epoch, trim, `XRANGE`,
check for a gap) are atomic. One reader per process follows the stream (`XREAD BLOCK`, on a
connection of its own) and hands each entry to the feed; an entry about a classified drops
its pages from this replica's in-process layer first, so whoever reads the listing next sees
the news.

With Redis away, a change is kept in this replica's own `LocalChangeLog` and reaches the
subscribers of this replica only; its cursor resumes here, and anywhere else it is expired.

`RedisV3Marks` keeps the last known V3 portal states in Redis (one hash per classified): a
webhook event delivered to two replicas makes one change, not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.cache.shared import SharedPageCache
from gateway.domain.changes import (
    ChangeCursor,
    ListingChange,
    LoggedChange,
    LogPosition,
    PortalMark,
)
from gateway.domain.errors import CursorExpired, InvalidInput
from gateway.domain.models import Portal
from gateway.infra.redis_link import RedisDown, RedisLink
from gateway.live.changelog import Deliver, LocalChangeLog, new_epoch
from gateway.live.changes import V3Marks

log = logging.getLogger(__name__)

_CHANGE: Final = TypeAdapter(ListingChange)
# How long the reader blocks in XREAD before it looks again (it wakes at once for an entry).
BLOCK_S: Final = 1.0

# Shared by both scripts: drop the entries older than the retention (ARGV[1], ms), by the
# append time each entry carries in its field `t` (Redis' clock, the same for every replica).
_TRIM_OLD = """
local function trim_old(stream, retention_ms)
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - retention_ms
  while true do
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)
    if #head == 0 then return end
    for _, entry in ipairs(head) do
      local fields, t = entry[2], nil
      for i = 1, #fields, 2 do
        if fields[i] == 't' then t = tonumber(fields[i + 1]) end
      end
      if t == nil or t >= oldest then
        redis.call('XTRIM', stream, 'MINID', entry[1])
        return
      end
    end
    local last = head[#head][1]
    local n = tonumber(string.match(last, '^(%d+)'))
    redis.call('XTRIM', stream, 'MINID', (n + 1) .. '-0')
  end
end
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
"""

# KEYS: stream, meta. ARGV: retention ms, max entries, payload, a new epoch (if none yet).
# Returns {epoch, n}.
_APPEND = (
    _TRIM_OLD
    + """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local n = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[1], n .. '-0', 'c', ARGV[3], 't', now_ms())
redis.call('XTRIM', KEYS[1], 'MAXLEN', tonumber(ARGV[2]))
trim_old(KEYS[1], tonumber(ARGV[1]))
return {epoch, n}
"""
)

# KEYS: stream, meta. ARGV: retention ms, max entries, epoch, after (n), strict ('1': the
# entry `after` itself must still be kept). Returns {'ok', entries} | {'expired'} | {'invalid'}.
_READ_AFTER = (
    _TRIM_OLD
    + """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if epoch ~= ARGV[3] then return {'expired'} end
local last = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
local after = tonumber(ARGV[4])
if after > last then return {'invalid'} end
trim_old(KEYS[1], tonumber(ARGV[1]))
if ARGV[5] == '1' and after > 0 then
  if #redis.call('XRANGE', KEYS[1], after .. '-0', after .. '-0') == 0 then
    return {'expired'}
  end
end
if after == last then return {'ok', {}} end
local entries = redis.call('XRANGE', KEYS[1], '(' .. after .. '-0', '+', 'COUNT', tonumber(ARGV[2]))
if #entries == 0 or entries[1][1] ~= (after + 1) .. '-0' then return {'expired'} end
return {'ok', entries}
"""
)

# KEYS: meta. ARGV: a new epoch. Returns {epoch, seq}: the log's name and its last entry.
_OPEN = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
return {epoch, tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')}
"""


@dataclass(slots=True)
class SharedLogStats:
    sent: int = 0  # changes appended to the stream
    received: int = 0  # entries the reader heard (each replica hears each one)
    alone: int = 0  # changes kept in process because Redis was away


class RedisChangeLog:
    """The change log in one Redis stream, shared by every replica (see the module docstring)."""

    def __init__(
        self,
        link: RedisLink,
        *,
        retention_s: float,
        max_entries: int,
        cache: SharedPageCache | None = None,
    ) -> None:
        self.link = link
        self.cache = cache
        self.retention_ms = max(1, round(retention_s * 1000))
        self.max_entries = max_entries
        self.stream = link.key("changes")
        self.meta = link.key("changes", "meta")
        self.local = LocalChangeLog(retention_s=retention_s, max_entries=max_entries)
        self.shared = SharedLogStats()
        self.identity: str | None = None  # "r" + the epoch in Redis, once known
        self.following = asyncio.Event()  # set while the reader follows the stream
        self.tried = asyncio.Event()  # set once the reader's first attempt has ended, either way
        self._last = LogPosition(0)  # the last entry the reader handed on
        self._deliver: Deliver | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._append = link.client.register_script(_APPEND)
        self._read = link.client.register_script(_READ_AFTER)
        self._open = link.client.register_script(_OPEN)
        # XREAD blocks for BLOCK_S: longer than the link's per-operation timeout.
        self._reader = aioredis.Redis.from_url(
            link.url,
            socket_timeout=BLOCK_S + link.op_timeout_s,
            socket_connect_timeout=link.op_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def head(self) -> ChangeCursor:
        if self.identity is None:
            return self.local.head()
        return ChangeCursor(self.identity, self._last)

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.local.start(deliver)
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._follow(), name="redis-change-reader")

    async def append(self, change: ListingChange) -> None:
        if change.classified_id is not None and self.cache is not None:
            # Before the news goes out: a replica that reads at once must not find the old
            # page in Redis.
            await self.cache.drop_shared(change.classified_id)
        payload = _CHANGE.dump_json(change)
        args: list[bytes | str | int] = [
            self.retention_ms,
            self.max_entries,
            payload,
            new_epoch(),
        ]
        try:
            epoch, _ = await self.link.run(
                lambda r: self._append(keys=[self.stream, self.meta], args=args, client=r)
            )
        except RedisDown:
            self.shared.alone += 1
            self.local.add(change)
            return
        self.shared.sent += 1
        identity = "r" + _text(epoch)
        if self.identity is not None and identity != self.identity:
            # The log in Redis is a new one (Redis lost its data): follow that one.
            log.warning("the shared change log was reset; following the new one")
            self._restart_reader()

    async def read_after(self, cursor: ChangeCursor, *, strict: bool = False) -> list[LoggedChange]:
        if cursor.log == self.local.identity:
            return self.local.entries_after(cursor, strict=strict)
        if not cursor.log.startswith("r") or cursor.position.minor:
            raise CursorExpired("this cursor is from another log")
        args: list[bytes | str | int] = [
            self.retention_ms,
            self.max_entries,
            cursor.log[1:],
            cursor.position.major,
            "1" if strict else "0",
        ]
        try:
            answer: Any = await self.link.run(
                lambda r: self._read(keys=[self.stream, self.meta], args=args, client=r)
            )
        except RedisDown:
            raise CursorExpired("the shared change log cannot be read now") from None
        outcome = _text(answer[0])
        if outcome == "invalid":
            raise InvalidInput("after takes the cursor of a ListingChangeEvent")
        if outcome != "ok":
            raise CursorExpired("events after this cursor are no longer kept")
        entries = [self._entry(cursor.log, entry_id, fields) for entry_id, fields in answer[1]]
        return [entry for entry in entries if entry is not None]

    def _entry(self, identity: str, entry_id: Any, fields: Any) -> LoggedChange | None:
        values = (
            dict(zip(fields[::2], fields[1::2], strict=True))
            if isinstance(fields, list)
            else fields
        )
        payload = values.get(b"c")
        try:
            change = _CHANGE.validate_json(payload or b"")
        except ValidationError:
            log.warning("ignoring an unreadable entry of %s", self.stream)
            return None
        return LoggedChange(ChangeCursor(identity, LogPosition.parse(_text(entry_id))), change)

    # --- the reader ----------------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            try:
                # At every (re)connection: Redis may have lost the log meanwhile.
                # The reader's socket waits BLOCK_S longer than a command may take: the
                # opening script gets only the command's time, so a silent Redis fails fast.
                async with asyncio.timeout(self.link.op_timeout_s):
                    opened: Any = await self._open(
                        keys=[self.meta], args=[new_epoch()], client=self._reader
                    )
                epoch, last = opened
                identity = "r" + _text(epoch)
                if identity != self.identity:
                    self.identity = identity
                    self._last = LogPosition(int(last))
                self.link.succeeded()
                self.following.set()
                self.tried.set()
                while True:
                    answer: Any = await self._reader.xread(
                        {self.stream: str(self._last)}, count=256, block=round(BLOCK_S * 1000)
                    )
                    for _stream, entries in answer or ():
                        for entry_id, fields in entries:
                            self._heard(entry_id, fields)
            except (RedisError, OSError, TimeoutError) as exc:
                self.following.clear()
                self.link.failed(exc)
                self.tried.set()
                await asyncio.sleep(self.link.backoff_s)

    def _heard(self, entry_id: Any, fields: Any) -> None:
        assert self.identity is not None
        entry = self._entry(self.identity, entry_id, fields)
        self._last = LogPosition.parse(_text(entry_id))
        if entry is None:
            return
        self.shared.received += 1
        change = entry.change
        if change.classified_id is not None and self.cache is not None:
            self.cache.drop_local(change.classified_id)
        if self._deliver is not None:
            self._deliver(entry)

    def _restart_reader(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            self._reader_task = asyncio.create_task(self._follow(), name="redis-change-reader")

    async def aclose(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        self.following.clear()
        self._deliver = None
        await self.local.aclose()
        await self._reader.aclose()


# --- V3 portal states -------------------------------------------------------------------

# KEYS: the classified's hash. ARGV: ttl s, then (portal, state, since) triples; since is a
# zero-padded count of microseconds, so text order is time order. Returns the changed portals.
_MERGE_MARKS = """
local changed = {}
for i = 2, #ARGV, 3 do
  local portal, state, since = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], portal)
  local old_state, old_since = nil, nil
  if old then
    local sep = string.find(old, '|', 1, true)
    old_state, old_since = string.sub(old, 1, sep - 1), string.sub(old, sep + 1)
  end
  if not old or since >= old_since then
    redis.call('HSET', KEYS[1], portal, state .. '|' .. since)
    if old_state ~= state then table.insert(changed, portal) end
  end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return changed
"""
# How long a classified's portal states are remembered after its last event.
MARKS_TTL_S: Final = 24 * 3600


class RedisV3Marks:
    """The last known V3 portal states, in Redis (as `LocalV3Marks` without Redis)."""

    def __init__(self, link: RedisLink, fallback: V3Marks) -> None:
        self.link = link
        self._fallback = fallback
        self._merge = link.client.register_script(_MERGE_MARKS)

    async def merge(
        self, classified_id: str, marks: dict[Portal, PortalMark]
    ) -> tuple[Portal, ...]:
        args: list[Any] = [MARKS_TTL_S]
        for portal, mark in marks.items():
            micros = round(mark.since.timestamp() * 1_000_000)
            args += [portal.value, mark.state.value, f"{micros:020d}"]
        key = self.link.key("v3marks", classified_id)
        try:
            changed = await self.link.run(lambda r: self._merge(keys=[key], args=args, client=r))
        except RedisDown:
            return await self._fallback.merge(classified_id, marks)
        names = {_text(name) for name in changed}
        return tuple(portal for portal in Portal if portal.value in names)


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
