"""The change log: listing changes kept for a while, in order, so a client can resume.

`ChangeLog` is the seam the change feed (`gateway.live.changes`) codes against;
`LocalChangeLog` keeps the changes of this process in a bounded deque, and
`gateway.live.redis_changelog.RedisChangeLog` keeps them in a Redis stream shared by every
replica. Either way:

- `append` gives a change the next position and hands it to `deliver` (the feed's local
  fan-out) — at once in process, through the one stream reader per process with Redis;
- `read_after(cursor)` answers the retained changes after a cursor, oldest first, or raises
  `CursorExpired` when some change after it is gone (dropped past the retention or the
  entry bound, or the cursor names another log: another process, an earlier start).
  A client's `after` is read `strict`ly: its own change must still be kept too. A client
  away longer than the retention watched nothing meanwhile, and a legacy change to its ads
  then was not logged (the poller forgets an unwatched ad's last status with the retention),
  so an empty log after its cursor proves nothing.

A change is kept for `retention_s` (GATEWAY_EVENT_RETENTION_S) and the log holds at most
`max_entries` (GATEWAY_EVENT_LOG_MAX_ENTRIES): whichever bound comes first drops the oldest.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.domain.changes import ChangeCursor, ListingChange, LoggedChange, LogPosition
from gateway.domain.errors import CursorExpired, InvalidInput

Deliver = Callable[[LoggedChange], None]

DEFAULT_RETENTION_S = 900.0
DEFAULT_MAX_ENTRIES = 10_000


class ChangeLog(Protocol):
    """Changes in order, retained for a while, readable after a cursor."""

    def head(self) -> ChangeCursor:
        """The cursor of the last change handed to `deliver` (before the first: position 0)."""
        ...

    def start(self, deliver: Deliver) -> None:
        """Hand every change appended from now on to `deliver`, in log order."""
        ...

    async def append(self, change: ListingChange) -> None: ...

    async def read_after(self, cursor: ChangeCursor, *, strict: bool = False) -> list[LoggedChange]:
        """Retained changes after `cursor`, oldest first; `CursorExpired` if some are gone
        (`strict`: or the cursor's own change)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class LogStats:
    appended: int = 0
    dropped: int = 0  # entries dropped past the retention or the entry bound


def new_epoch() -> str:
    """A log name no other process has drawn (10 random letters and digits)."""
    return secrets.token_hex(5)


class LocalChangeLog:
    """This process's changes in a bounded deque; positions are sequence numbers.

    >>> log = LocalChangeLog(retention_s=900, max_entries=10_000)
    """

    def __init__(
        self,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        epoch: str | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.identity = epoch or new_epoch()
        self.retention_s = retention_s
        self.max_entries = max_entries
        self.stats = LogStats()
        self._clock = clock
        self._entries: deque[tuple[float, LoggedChange]] = deque()
        self._last = 0  # the last sequence number given out
        self._dropped_through = 0  # the greatest sequence number dropped
        self._deliver: Deliver | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def head(self) -> ChangeCursor:
        return ChangeCursor(self.identity, LogPosition(self._last))

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def append(self, change: ListingChange) -> None:
        self.add(change)

    def add(self, change: ListingChange) -> LoggedChange:
        """`append`, synchronously (the in-process log never waits)."""
        self._last += 1
        entry = LoggedChange(ChangeCursor(self.identity, LogPosition(self._last)), change)
        self._entries.append((self._clock(), entry))
        self.stats.appended += 1
        self._trim()
        if self._deliver is not None:
            self._deliver(entry)
        return entry

    async def read_after(self, cursor: ChangeCursor, *, strict: bool = False) -> list[LoggedChange]:
        return self.entries_after(cursor, strict=strict)

    def entries_after(self, cursor: ChangeCursor, *, strict: bool = False) -> list[LoggedChange]:
        if cursor.log != self.identity:
            raise CursorExpired("this cursor is from another log (a restart or another replica)")
        after = cursor.position.major
        if cursor.position.minor or after > self._last:
            raise InvalidInput("after takes the cursor of a ListingChangeEvent")
        self._trim()
        if after < self._dropped_through:
            raise CursorExpired("events after this cursor are no longer kept")
        if strict and after and after == self._dropped_through:
            raise CursorExpired("this cursor is older than the events kept")
        # Sequence numbers are consecutive: the entry after `after` sits at a known offset.
        first = self._last - len(self._entries) + 1
        start = max(0, after + 1 - first)
        return [entry for _, entry in itertools.islice(self._entries, start, None)]

    def _trim(self) -> None:
        oldest = self._clock() - self.retention_s
        entries = self._entries
        while entries and (len(entries) > self.max_entries or entries[0][0] < oldest):
            _, dropped = entries.popleft()
            self._dropped_through = dropped.cursor.position.major
            self.stats.dropped += 1

    async def aclose(self) -> None:
        self._deliver = None
