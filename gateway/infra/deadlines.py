"""A caller's own deadline, set by an edge and honoured by every upstream call under it.

Transport-neutral, like `models` and `errors`: an edge (gRPC's call deadline) sets it around
its service call, and the upstream request helper shortens each operation's deadline to it.
It lives in a context variable, so tasks created under it (loader batches, history reads)
keep it. A page load other callers join (single-flight) keeps the deadline of the caller
that started it.

    with caller_deadline(context.time_remaining()):
        await scope.listings(refs, selection)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("caller_deadline", default=None)


@contextmanager
def caller_deadline(seconds: float | None) -> Iterator[None]:
    """Upstream work started inside the block ends within `seconds` (None: no bound)."""
    if seconds is None:
        yield
        return
    token = _deadline.set(asyncio.get_running_loop().time() + max(0.0, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def caller_deadline_at() -> float | None:
    """The caller's deadline in event-loop time, if one is set."""
    return _deadline.get()
