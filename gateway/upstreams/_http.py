"""The shared request helper: sessions, deadlines, retries and error translation.

Every upstream call goes through `request()`. It is the one place in the gateway that
catches connection errors (`gateway.upstreams.wire`), timeouts and JSON-decode errors and
turns them, and HTTP statuses, into the `gateway.domain.errors` tree:

    timeout, connection error, 5xx, other odd status, malformed body -> UpstreamUnavailable
    429 (once retries are spent; `retry_after` kept)                  -> UpstreamUnavailable
    404                                                               -> UpstreamNotFound
    any other 4xx (401, 403, ...)                                     -> UpstreamRejected

Each error carries `upstream` and `status` and a message naming the upstream, the endpoint
and the status, never a header, a token, a key or the upstream body (the body goes to the
debug log only, truncated). Idempotent reads are retried at most twice, with exponential
backoff and jitter, on timeouts, connection errors, 5xx and 429, honouring `Retry-After`;
all attempts and waits fit inside one per-operation `Deadline`. With an `UpstreamGuard`, an
operation also passes the upstream's circuit breaker, retry budget and concurrency cap, is
reported to its observer (metrics) and traced as one OpenTelemetry client span whose context
goes out as `traceparent`/`tracestate`.

When the caller's own deadline (`gateway.infra.deadlines`) is what runs out, the operation
ends with `DeadlineExceeded`: the caller was in a hurry, the upstream did nothing wrong, so
the circuit breaker does not count it.

The retry loop is written for this one policy rather than with a general retry library: on
the success path it costs one attempt and nothing else, where a general one builds its
state, strategies and callbacks around every operation (measured with
`python -m bench.upstream_call`).

Depends on `wire` (HTTP/1.1), orjson, the OpenTelemetry API, `guard`,
`gateway.domain.errors` and `gateway.infra.deadlines`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson
import yarl
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.domain.errors import (
    DeadlineExceeded,
    UpstreamError,
    UpstreamName,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.infra.deadlines import caller_deadline_at
from gateway.upstreams.breaker import CircuitOpen
from gateway.upstreams.guard import UpstreamGuard
from gateway.upstreams.wire import AnswerTooLarge, Pool, WireError

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "Deadline",
    "RetryPolicy",
    "create_session",
    "request",
]

log = logging.getLogger("gateway.upstreams")

DEFAULT_MAX_RETRIES: Final = 2
# First backoff step; doubled per retry, plus up to the same amount of jitter.
DEFAULT_BACKOFF_S: Final = 0.1
MAX_BACKOFF_S: Final = 2.0
# No retry is sent with less time than this left before the deadline.
MIN_ATTEMPT_S: Final = 0.01
# Upstream answers are small JSON documents; anything larger is a misbehaving upstream
# and must not be buffered without limit.
DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024
_LOGGED_BODY_CHARS: Final = 500
_W3C: Final = TraceContextTextMapPropagator()


def create_session(
    *, timeout_s: float, limit: int = 100, headers: Mapping[str, str] | None = None
) -> Pool:
    """Open one pool of keep-alive connections for one upstream; the caller closes it
    (`await pool.close()`, or `async with`).

    `limit` bounds the exchanges in flight at once (and so the connections);
    `timeout_s` caps every attempt, a safety net behind the per-operation deadline of
    `request()`; `headers` go with every request that does not set them itself. Must be
    called inside a running event loop.
    """
    return Pool(limit=limit, attempt_cap_s=timeout_s, headers=headers)


class Deadline:
    """A point in (event loop) time by which one whole upstream operation must be done.

    `Deadline.after(5.0)` covers every attempt, backoff sleep and token fetch of one
    operation, so retries can never stretch a call past its budget.
    """

    __slots__ = ("at", "by_caller", "seconds")

    def __init__(self, at: float, seconds: float, *, by_caller: bool = False) -> None:
        self.at = at
        self.seconds = seconds
        # True when the caller's own deadline comes first: running out is then theirs.
        self.by_caller = by_caller

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """`seconds` from now, or sooner when the caller's own deadline ends first
        (`gateway.infra.deadlines`)."""
        now = asyncio.get_running_loop().time()
        at = now + seconds
        caller_at = caller_deadline_at()
        if caller_at is not None and caller_at < at:
            at = max(now, caller_at)
            return cls(at, at - now, by_caller=True)
        return cls(at, seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - asyncio.get_running_loop().time())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How idempotent reads are retried: `max_retries` after the first attempt, waits
    growing from `backoff_s` (doubled per retry, plus up to `backoff_s` of jitter, at most
    `max_backoff_s`) unless the upstream says `Retry-After`; all within the deadline.

    Built from `GATEWAY_UPSTREAM_RETRIES` / `GATEWAY_UPSTREAM_BACKOFF_S`. `sleep` is
    there for tests: they record the waits instead of sitting through them.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)


class _RetryableFailure(Exception):
    """An attempt failed in a way worth retrying; wraps the error to raise if retries run out."""

    def __init__(
        self, error: UpstreamError, retry_after: float | None = None, *, timed_out: bool = False
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after
        self.timed_out = timed_out


def _backoff(policy: RetryPolicy, retry_number: int) -> float:
    """Exponential backoff with jitter: `backoff_s` doubled per retry, plus up to `backoff_s`
    at random, at most `max_backoff_s`."""
    try:
        wait = policy.backoff_s * 2.0 ** (retry_number - 1) + random.uniform(0, policy.backoff_s)
    except OverflowError:
        wait = policy.max_backoff_s
    return max(0.0, min(wait, policy.max_backoff_s))


def _out_of_time(label: str, upstream: UpstreamName, deadline: Deadline) -> UpstreamError:
    if deadline.by_caller:
        return DeadlineExceeded(
            f"{label}: the caller's deadline ended before the upstream answered",
            upstream=upstream,
        )
    return UpstreamUnavailable(
        f"{label}: no answer within {deadline.seconds:g}s", upstream=upstream
    )


def _label(upstream: UpstreamName, endpoint: str) -> str:
    return f"{upstream} {endpoint}"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _status_error(
    upstream: UpstreamName, endpoint: str, status: int, retry_after: str | None
) -> UpstreamError | _RetryableFailure:
    message = f"{_label(upstream, endpoint)}: HTTP {status}"
    if status == 404:
        return UpstreamNotFound(message, upstream=upstream, status=status)
    wait_s = parse_retry_after(retry_after)
    if status == 429:
        # Rate limiting is transient: once retries are spent the caller may come back later.
        limited = UpstreamUnavailable(
            f"{message} (rate limited)", upstream=upstream, status=status, retry_after=wait_s
        )
        return _RetryableFailure(limited, wait_s)
    if 400 <= status < 500:
        return UpstreamRejected(message, upstream=upstream, status=status)
    if status >= 500:
        unavailable = UpstreamUnavailable(
            message, upstream=upstream, status=status, retry_after=wait_s
        )
        return _RetryableFailure(unavailable, wait_s)
    unavailable = UpstreamUnavailable(message, upstream=upstream, status=status)
    # 1xx/3xx: redirects are not followed (they could carry credentials elsewhere).
    return unavailable


def _excerpt(body: bytes) -> str:
    return body[:_LOGGED_BODY_CHARS].decode("utf-8", errors="replace")


class _Call:
    """One operation as `request()` was asked for it: what each of its attempts sends, and
    how its answer is read. Built once per operation, so the layers below take one object
    instead of the same dozen arguments each."""

    __slots__ = (
        "endpoint",
        "expect_json",
        "guard",
        "headers",
        "json",
        "label",
        "log_body",
        "max_body_bytes",
        "method",
        "policy",
        "retry",
        "session",
        "upstream",
        "url",
    )

    def __init__(
        self,
        session: Pool,
        method: str,
        url: yarl.URL,
        *,
        upstream: UpstreamName,
        endpoint: str,
        headers: Mapping[str, str] | None,
        json: object,
        retry: bool,
        expect_json: bool,
        policy: RetryPolicy,
        log_body: bool,
        max_body_bytes: int,
        guard: UpstreamGuard | None,
    ) -> None:
        self.session = session
        self.method = method
        self.url = url
        self.upstream = upstream
        self.endpoint = endpoint
        self.label = _label(upstream, endpoint)
        self.headers = headers
        self.json = json
        self.retry = retry
        self.expect_json = expect_json
        self.policy = policy
        self.log_body = log_body
        self.max_body_bytes = max_body_bytes
        self.guard = guard


async def _exchange(
    call: _Call,
    headers: Mapping[str, str],
    data: bytes | None,
    budget: float,
    span: trace.Span | None,
) -> Any:
    """One attempt: sent, answered within `budget`, and its answer read or classified."""
    label, upstream, guard, session = call.label, call.upstream, call.guard, call.session
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = "connection_error"
    try:
        async with asyncio.timeout(min(budget, session.attempt_cap_s)):
            answer = await session.request(
                call.method, call.url, headers, data, max_bytes=call.max_body_bytes
            )
        status = answer.status
        outcome = str(status)
        body: bytes | None = answer.body
        retry_after = answer.headers.get("retry-after")
    except AnswerTooLarge as exc:
        status, body, retry_after = exc.status, None, None
        outcome = str(status)
    except TimeoutError as exc:
        outcome = "timeout"
        raise _RetryableFailure(
            UpstreamUnavailable(f"{label}: timed out", upstream=upstream), timed_out=True
        ) from exc
    except WireError as exc:
        raise _RetryableFailure(
            UpstreamUnavailable(
                # Its text is the pool's own (what failed, an exception's type): no secret.
                f"{label}: connection failed: {exc}",
                upstream=upstream,
            )
        ) from exc
    except asyncio.CancelledError:
        # The operation's deadline fired inside this attempt (or the caller went away).
        outcome = "timeout"
        raise
    finally:
        if guard is not None:
            guard.observer.attempt(upstream, call.endpoint, outcome, loop.time() - started)
            # On the call's own span only: without one, the current span is the caller's,
            # which a shared load may outlive.
            if span is not None and outcome.isdigit():
                span.set_attribute("http.response.status_code", int(outcome))

    if body is None:
        raise UpstreamUnavailable(f"{label}: response too large", upstream=upstream, status=status)
    if not 200 <= status < 300:
        if call.log_body:
            log.debug("%s answered HTTP %s: %s", label, status, _excerpt(body))
        failure = _status_error(upstream, call.endpoint, status, retry_after)
        raise failure
    if not call.expect_json:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if call.log_body:
            log.debug("%s sent a malformed body: %s", label, _excerpt(body))
        raise UpstreamUnavailable(
            f"{label}: malformed response body (HTTP {status})", upstream=upstream, status=status
        ) from exc


async def request(
    session: Pool,
    method: str,
    url: yarl.URL,
    *,
    upstream: UpstreamName,
    endpoint: str,
    deadline: Deadline,
    headers: Mapping[str, str] | None = None,
    json: object = None,
    retry: bool = False,
    expect_json: bool = True,
    max_retries: int = DEFAULT_MAX_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    log_body: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    guard: UpstreamGuard | None = None,
    policy: RetryPolicy | None = None,
) -> Any:
    """Perform one upstream operation and return its decoded JSON body (None if not `expect_json`).

    `url` is sent exactly as given (build it with `yarl.URL(..., encoded=True)` to keep
    your own percent-encoding). `json` is serialised with orjson. With `retry=True` (only
    for idempotent reads) timeouts, connection errors, 5xx and 429 are retried at most
    `max_retries` times within `deadline`; a `Retry-After` longer than the time left ends
    the operation at once with the last error. Pass `log_body=False` when the body may hold
    a secret (the token endpoint). With a `guard`, an open circuit fails at once with
    `UpstreamUnavailable(reason="circuit_open")`. A `policy` (from the settings) takes the
    place of `max_retries` and `backoff_s`. Raises the `gateway.domain.errors` tree only.
    """
    call = _Call(
        session,
        method,
        url,
        upstream=upstream,
        endpoint=endpoint,
        headers=headers,
        json=json,
        retry=retry,
        expect_json=expect_json,
        policy=policy or RetryPolicy(max_retries=max_retries, backoff_s=backoff_s),
        log_body=log_body,
        max_body_bytes=max_body_bytes,
        guard=guard,
    )
    if guard is None:
        return await _operation(call, deadline, None)
    try:
        trial = guard.breaker.acquire()
    except CircuitOpen as exc:
        guard.observer.refused(upstream, endpoint, "circuit_open")
        raise UpstreamUnavailable(
            f"{call.label}: not called, the circuit is open after repeated failures",
            upstream=upstream,
            reason="circuit_open",
            retry_after=exc.retry_in,
        ) from None
    # The slot is held for the whole operation (backoff included) and waited for outside
    # the operation's timeout scope, so running out of time here is reported as such.
    if not await guard.take_slot(deadline.remaining()):
        guard.breaker.release(trial=trial)
        guard.observer.refused(upstream, endpoint, "concurrency_limit")
        raise UpstreamUnavailable(
            f"{call.label}: too many calls in flight, none finished in time",
            upstream=upstream,
            reason="concurrency_limit",
        )
    try:
        return await _guarded(call, guard, deadline, trial)
    finally:
        guard.give_slot()


async def _guarded(call: _Call, guard: UpstreamGuard, deadline: Deadline, trial: bool) -> Any:
    """One operation admitted by the breaker: traced when spans are recorded, and its
    outcome recorded."""
    guard.budget.deposit()
    if not guard.traced:
        return await _recorded(_operation(call, deadline, None), guard, trial)
    parent = None
    headers = call.headers
    if headers and "traceparent" in headers and not trace.get_current_span().is_recording():
        # No span of ours is active (e.g. a gRPC call): continue the trace the client chose.
        parent = _W3C.extract(headers)
    with guard.tracer.start_as_current_span(
        f"{call.method} {call.upstream} {call.endpoint}",
        context=parent,
        kind=SpanKind.CLIENT,
        attributes={"gateway.upstream": call.upstream, "gateway.endpoint": call.endpoint},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            return await _recorded(_operation(call, deadline, span), guard, trial)
        except UpstreamError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code))
            raise


async def _recorded(operation: Awaitable[Any], guard: UpstreamGuard, trial: bool) -> Any:
    """The outcome of `operation`, recorded by the circuit breaker: a success, a failure,
    or neither (the caller gave up, or ran out of its own time)."""
    ok: bool | None = None
    try:
        result = await operation
        ok = True
        return result
    except UpstreamError as exc:
        if exc.reason is None:
            # An answer the upstream chose to give (404, 4xx) shows it is up.
            ok = not isinstance(exc, UpstreamUnavailable)
        raise
    finally:
        if ok is None:
            guard.breaker.release(trial=trial)
        else:
            guard.breaker.record(ok=ok, trial=trial)


async def _operation(call: _Call, deadline: Deadline, span: trace.Span | None) -> Any:
    """The attempts of one operation, retried as its policy allows within `deadline`."""
    label, upstream, guard, policy = call.label, call.upstream, call.guard, call.policy
    all_headers = dict(call.headers) if call.headers else {}
    data: bytes | None = None
    if call.json is not None:
        data = orjson.dumps(call.json)
        all_headers.setdefault("Content-Type", "application/json")
    all_headers.setdefault("Accept", "application/json")
    if span is not None:
        if span.get_span_context().is_valid:
            # Our client span is the parent the upstream sees; it replaces any header given.
            _W3C.inject(all_headers)
    elif trace.get_current_span().get_span_context().is_valid:
        # No client span is recorded: the request's own span is the parent the upstream sees.
        _W3C.inject(all_headers)
    attempts = 1 + (policy.max_retries if call.retry else 0)
    attempt = 0
    # What ended the previous attempt, if one failed: the cause of running out of time.
    cause: BaseException | None = None
    try:
        while True:
            attempt += 1
            remaining = deadline.remaining()
            if remaining <= 0:
                raise _out_of_time(label, upstream, deadline) from cause
            # An attempt that hangs must leave room for the retries still allowed, so it
            # gets half of the time left unless it is the last one.
            last = attempt >= attempts
            try:
                return await _exchange(
                    call, all_headers, data, remaining if last else remaining * 0.5, span
                )
            except _RetryableFailure as failure:
                error = failure.error
                if failure.timed_out and (
                    deadline.by_caller or deadline.remaining() <= MIN_ATTEMPT_S
                ):
                    # Under the caller's deadline a timeout is the caller's hurry; otherwise
                    # the operation's own time is spent, not only this attempt's share.
                    error = _out_of_time(label, upstream, deadline)
                if last:
                    raise error from failure.__cause__
                wait = (
                    failure.retry_after
                    if failure.retry_after is not None
                    else _backoff(policy, attempt)
                )
                # A timed-out attempt can end a timer tick before the deadline (asyncio
                # runs timers within its clock resolution); a retry then would be sent
                # with no time to answer.
                if wait + MIN_ATTEMPT_S >= deadline.remaining():
                    if failure.timed_out:
                        # No retry fits in what is left: the operation's time is spent too.
                        error = _out_of_time(label, upstream, deadline)
                    raise error from failure.__cause__
                # The budget is asked last, so a retry is taken from it only when nothing
                # else stops it.
                if guard is not None and not guard.budget.withdraw():
                    guard.observer.refused(upstream, call.endpoint, "retry_budget")
                    raise error from failure.__cause__
                log.info(
                    "%s: attempt %d failed (%s); retrying in %.2fs",
                    label,
                    attempt,
                    failure,
                    wait,
                )
                if guard is not None:
                    guard.observer.retry(upstream, call.endpoint)
                cause = failure.__cause__
                await policy.sleep(wait)
    finally:
        if span is not None:
            span.set_attribute("gateway.retries", max(0, attempt - 1))
