"""A circuit breaker for one upstream: stop calling it while it keeps failing.

    breaker = CircuitBreaker(failure_threshold=5, reset_after_s=10.0)
    trial = breaker.acquire()          # False/True, or raises CircuitOpen while open
    ... call the upstream ...
    breaker.record(ok=True, trial=trial)

closed -> open after `failure_threshold` consecutive failed operations; open -> half-open
once `reset_after_s` have passed (checked lazily, on the next call or read, so no timer
runs); half-open lets exactly one trial call through (every other call fails at once),
whose success closes the breaker and whose failure opens it again. While open, results of
calls that started before it opened are ignored: only the trial decides.

Written here rather than taken from aiobreaker (unmaintained since 2021) or purgatory: both
read the wall clock themselves (tests would have to sleep), neither lets exactly one trial
through while half-open, and we need a hook on every transition for metrics and readiness.
Depends on the standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker", "CircuitOpen"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """The breaker refuses the call; `retry_in` seconds until a trial call is allowed."""

    def __init__(self, retry_in: float) -> None:
        super().__init__(f"circuit open, next trial in {retry_in:.1f}s")
        self.retry_in = retry_in


class CircuitBreaker:
    """Counts consecutive failed operations of one upstream and opens after too many.

    `clock` (monotonic seconds) is injectable so tests move time without sleeping;
    `on_change(state)` is called after every transition.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self._threshold = failure_threshold
        self._reset_after_s = reset_after_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state.value}, failures={self._failures})"

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._reset_after_s
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def acquire(self) -> bool:
        """Admit one call: False for an ordinary call, True for the half-open trial.

        Raises `CircuitOpen` when the call must not reach the upstream.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return_at = self._opened_at + self._reset_after_s
        raise CircuitOpen(max(0.0, return_at - self._clock()))

    def record(self, *, ok: bool, trial: bool) -> None:
        """The outcome of a call admitted by `acquire()` (which returned `trial`)."""
        if trial:
            self._trial_running = False
            if ok:
                self._failures = 0
                self._move(BreakerState.CLOSED)
            else:
                self._open()
            return
        if self._state is not BreakerState.CLOSED:
            return  # started before the breaker opened: only the trial decides now
        if ok:
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open()

    def release(self, *, trial: bool) -> None:
        """A call ended without an outcome (cancelled): let another trial through."""
        if trial:
            self._trial_running = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        changed = state is not self._state
        self._state = state
        if changed and self._on_change is not None:
            self._on_change(state)
