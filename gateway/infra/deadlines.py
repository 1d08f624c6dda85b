"""A caller's own deadline, set by an edge and honoured by every upstream call under it.

Transport-neutral, like `models` and `errors`: an edge (gRPC's call deadline) sets it around
its service call, and the upstream request helper shortens each operation's deadline to it.
It lives in a context variable, so tasks created under it (loader batches, history reads)
keep it. A page load other callers join (single-flight) runs without it
(`without_caller_deadline`): it must not end with the first caller's hurry.

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


@contextmanager
def without_caller_deadline() -> Iterator[None]:
    """Work started inside the block is bound by its own deadlines only: for a load that
    other callers share (single-flight), which must not end with the first caller's hurry."""
    token = _deadline.set(None)
    try:
        yield
    finally:
        _deadline.reset(token)


def caller_deadline_at() -> float | None:
    """The caller's deadline in event-loop time, if one is set."""
    return _deadline.get()
