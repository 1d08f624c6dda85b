"""`Wakeup`: how a subscriber's reader waits for its next event; `Signal`: how anyone waits
for a change in who is subscribed.

An `asyncio.Event` per subscriber keeps a deque of waiters for the subscription's whole life
(~0.75 KB each, the largest single cost of an idle subscription after the queue itself);
this holds a future only while its one reader waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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


class Signal:
    """Wakes every task waiting in `until()` at each `notify()`; each then looks at its
    condition again. What a test (or an operator's probe) awaits instead of polling."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Returns once `condition()` holds, looking again after each `notify()`."""
        while not condition():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
