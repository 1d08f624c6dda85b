"""What protects one upstream and watches it: breaker, retry budget, concurrency cap, observer.

`_http.request(..., guard=guard)` consults the guard around every operation:

- the `CircuitBreaker` refuses calls at once while the upstream keeps failing;
- the `RetryBudget` lets retries add at most ~`ratio` (20 %) to the calls made, so an
  outage does not triple the load on an upstream that is already struggling;
- a semaphore caps the concurrent calls; a call waiting for a slot gives up with the
  operation's own deadline;
- the `UpstreamObserver` (metrics, logs) hears about every attempt, retry and refusal, and
  the OpenTelemetry `tracer` gets one client span per operation.

Depends on the standard library, the OpenTelemetry API and `breaker` only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

from opentelemetry import trace

from gateway.domain.errors import UpstreamName
from gateway.upstreams.breaker import BreakerState, CircuitBreaker

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "NullObserver",
    "RetryBudget",
    "UpstreamGuard",
    "UpstreamObserver",
]

DEFAULT_MAX_CONCURRENCY: Final = 64


class UpstreamObserver(Protocol):
    """What the upstream layer reports; called once per attempt or event, never per item."""

    def attempt(self, upstream: UpstreamName, endpoint: str, status: str, seconds: float) -> None:
        """One HTTP attempt ended: `status` is the HTTP status, `timeout` or `connection_error`."""
        ...

    def retry(self, upstream: UpstreamName, endpoint: str) -> None:
        """A failed attempt is about to be retried."""
        ...

    def refused(self, upstream: UpstreamName, endpoint: str, reason: str) -> None:
        """The gateway did not call: `circuit_open`, `concurrency_limit` or `retry_budget`."""
        ...

    def breaker_changed(self, upstream: UpstreamName, state: BreakerState) -> None:
        """The upstream's breaker moved to `state`."""
        ...

    def batch(self, upstream: UpstreamName, size: int) -> None:
        """One batched call is about to ask for `size` items."""
        ...


class NullObserver:
    """Reports nowhere: the default for clients built without telemetry."""

    def attempt(self, upstream: UpstreamName, endpoint: str, status: str, seconds: float) -> None:
        pass

    def retry(self, upstream: UpstreamName, endpoint: str) -> None:
        pass

    def refused(self, upstream: UpstreamName, endpoint: str, reason: str) -> None:
        pass

    def breaker_changed(self, upstream: UpstreamName, state: BreakerState) -> None:
        pass

    def batch(self, upstream: UpstreamName, size: int) -> None:
        pass


class RetryBudget:
    """Retries allowed as a share of operations, in the manner of Finagle's RetryBudget.

    Every operation deposits `ratio` of a token, every retry withdraws a whole one; the
    balance is capped at `reserve`, which is also where it starts, so a quiet gateway can
    still retry a few isolated failures. "Recent" is counted in calls, not seconds, so no
    clock is needed.
    """

    def __init__(self, *, ratio: float = 0.2, reserve: float = 10.0) -> None:
        self._ratio = ratio
        self._reserve = reserve
        self._balance = reserve

    def deposit(self) -> None:
        self._balance = min(self._reserve, self._balance + self._ratio)

    def withdraw(self) -> bool:
        """Take one retry from the budget; False when the budget is spent."""
        if self._balance < 1.0 - 1e-9:  # five deposits of 0.2 make a whole retry
            return False
        self._balance -= 1.0
        return True


class UpstreamGuard:
    """Breaker, retry budget, concurrency cap, observer and tracer of one upstream."""

    def __init__(
        self,
        upstream: UpstreamName,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 10.0,
        retry_ratio: float = 0.2,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        observer: UpstreamObserver | None = None,
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream: UpstreamName = upstream
        self.observer: UpstreamObserver = observer or NullObserver()
        self.tracer: trace.Tracer = tracer or trace.NoOpTracer()
        # Without a recording tracer an operation skips the span machinery altogether.
        self.traced = not isinstance(self.tracer, trace.NoOpTracer)
        self.breaker = CircuitBreaker(
            failure_threshold=failure_threshold,
            reset_after_s=reset_after_s,
            clock=clock,
            on_change=lambda state: self.observer.breaker_changed(upstream, state),
        )
        self.budget = RetryBudget(ratio=retry_ratio)
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"UpstreamGuard({self.upstream!r}, {self.breaker!r}, in_flight={self.in_flight})"

    async def take_slot(self, timeout_s: float) -> bool:
        """Wait at most `timeout_s` for a free call slot; False when none came."""
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once, no timer needed
            self.in_flight += 1
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            return False
        self.in_flight += 1
        return True

    def give_slot(self) -> None:
        self.in_flight -= 1
        self._slots.release()
