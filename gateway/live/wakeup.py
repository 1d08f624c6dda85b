"""`Wakeup`: how a subscriber's reader waits for its next event.

An `asyncio.Event` per subscriber keeps a deque of waiters for the subscription's whole life
(~0.75 KB each, the largest single cost of an idle subscription after the queue itself);
this holds a future only while its one reader waits.
"""

from __future__ import annotations

import asyncio


class Wakeup:
    """Wakes the one task waiting in `wait()`, if any. A `set()` while nobody waits is not
    remembered: the reader looks at its queue before it waits."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
