"""The gateway's error tree: what can go wrong, independent of any transport.

    GatewayError
    ├── InternalError         a bug failed one read; logged with its cause, callers see nothing of it
    ├── InvalidInput          the caller's arguments are wrong; fix the request
    │   ├── TooCostly         ... the request could make more upstream reads than allowed
    │   └── CursorExpired     ... a change cursor whose later events are no longer kept
    ├── Unauthenticated       the caller presented no valid credential
    ├── Overloaded            the gateway is at capacity (admission); nothing was done, retry later
    ├── NotFound              the named listing, classified or ad does not exist
    │   └── UpstreamNotFound  ... and an upstream said so
    └── UpstreamError         an upstream could not answer as asked
        ├── UpstreamUnavailable  timeout, connection error, 5xx, 429, malformed body, circuit
        │   │                    open; safe to retry later (after `retry_after` when known)
        │   └── DeadlineExceeded ... the caller's own deadline ended first (not the upstream's fault)
        └── UpstreamRejected     the upstream refused the call (4xx other than 404)

Upstream clients translate foreign exceptions into this tree in one place
(`gateway.upstreams._http`); each edge (GraphQL, gRPC, HTTP) maps the tree once.
Messages are written for callers: they never hold tokens, keys or upstream bodies.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import ClassVar, Literal, TypeAlias, TypeVar

UpstreamName = Literal["classifieds-v3", "legacy"]


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, *, upstream: UpstreamName | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.upstream: UpstreamName | None = upstream


class InternalError(GatewayError):
    """Something other than a `GatewayError` failed one read: a bug. Not worth retrying.

    The cause stays in `__cause__` for the log; callers only ever see "Unexpected error".
    """

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self) -> None:
        super().__init__("Unexpected error")


class InvalidInput(GatewayError):
    """The caller's arguments are invalid; retrying the same request will fail again."""

    code = "BAD_USER_INPUT"


class TooCostly(InvalidInput):
    """The request could make more upstream reads than `GATEWAY_MAX_UPSTREAM_COST` allows
    (`gateway.service.plan_cost`); refused before any upstream call. Ask less per request."""

    code = "QUERY_TOO_COMPLEX"

    def __init__(self, message: str, *, cost: int, limit: int) -> None:
        super().__init__(message)
        self.cost = cost
        self.limit = limit


class CursorExpired(InvalidInput):
    """The events after this change cursor are no longer kept (past the retention, or from
    another process or log): reload what is watched, then subscribe without a cursor."""

    reason: ClassVar[str] = "cursor_expired"


class Unauthenticated(GatewayError):
    """The caller must present a valid credential."""

    code = "UNAUTHENTICATED"


class Overloaded(GatewayError):
    """Refused at admission: the gateway is at capacity. Nothing was executed; retry after
    `retry_after` seconds (on another replica, if there is one)."""

    code = "OVERLOADED"

    def __init__(self, message: str, *, retry_after: float, reason: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # Why: "queue_full" (no room to wait) or "queue_timeout" (waited too long).
        self.reason = reason


class NotFound(GatewayError):
    """The thing asked for does not exist."""

    code = "NOT_FOUND"


class UpstreamError(GatewayError):
    """An upstream did not answer as asked; `upstream` names which one."""

    code = "UPSTREAM_UNAVAILABLE"
    upstream: UpstreamName

    def __init__(
        self,
        message: str,
        *,
        upstream: UpstreamName,
        status: int | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.upstream = upstream
        self.status = status
        # Seconds the upstream asked us to wait (its `Retry-After`), passed on to the caller.
        self.retry_after = retry_after
        # Why the gateway itself refused the call, e.g. "circuit_open"; None when the
        # upstream was asked.
        self.reason = reason


class UpstreamNotFound(UpstreamError, NotFound):
    """The upstream answered that the id is unknown (404, or a legacy 'not found' entry)."""

    code = "NOT_FOUND"


class UpstreamUnavailable(UpstreamError):
    """Timeout, connection failure, 5xx, 429 or a malformed body: the upstream may recover; retry later."""

    code = "UPSTREAM_UNAVAILABLE"


class DeadlineExceeded(UpstreamUnavailable):
    """The caller's own deadline ended before the upstream answered.

    Not a sign that the upstream is unwell, so the circuit breaker does not count it
    (`reason` is set); the gRPC edge answers DEADLINE_EXCEEDED.
    """

    code = "DEADLINE_EXCEEDED"

    def __init__(self, message: str, *, upstream: UpstreamName) -> None:
        super().__init__(message, upstream=upstream, reason="caller_deadline")


class UpstreamRejected(UpstreamError):
    """The upstream refused the call (4xx other than 404): retrying unchanged will not help."""

    code = "UPSTREAM_REJECTED"


T = TypeVar("T")

# A result that may have failed on its own: one listing's source, one user's batch.
Outcome: TypeAlias = T | GatewayError


async def capture(awaitable: Awaitable[T]) -> T | GatewayError:
    """Await `awaitable`, returning a `GatewayError` instead of raising it.

    Anything else becomes an `InternalError` (its cause kept): reads are gathered
    together, and one read that fails on a bug must fail only what needed it.
    """
    try:
        return await awaitable
    except GatewayError as exc:
        return exc
    except Exception as exc:
        error = InternalError()
        error.__cause__ = exc
        return error
