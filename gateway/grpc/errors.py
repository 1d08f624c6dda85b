"""The gRPC edge's one translation of errors into status codes.

    InvalidInput                      -> INVALID_ARGUMENT   (no upstream was called)
      TooCostly (upstream-cost budget)   ... with `gateway-cost` and `gateway-limit`
      CursorExpired (WatchListings)      ... with `gateway-reason: cursor_expired`
    Unauthenticated                   -> UNAUTHENTICATED
    Overloaded (admission)            -> RESOURCE_EXHAUSTED (retry after `gateway-retry-after` s)
    NotFound, UpstreamNotFound        -> NOT_FOUND
    UpstreamRejected 401/403          -> UNAUTHENTICATED    (the credentials were refused)
    UpstreamRejected, other           -> INVALID_ARGUMENT   (retrying unchanged will not help)
    UpstreamUnavailable               -> UNAVAILABLE        (safe to retry later)
      DeadlineExceeded                   -> DEADLINE_EXCEEDED (the caller's deadline ran out)
    the caller's deadline ran out     -> DEADLINE_EXCEEDED
    anything else                     -> INTERNAL "Unexpected error" (logged here)

Handlers are looked up along the exception's MRO, so a subclass needs no entry of its own.
The details are the error's caller-safe message; trailing metadata `gateway-code` carries
the GraphQL `extensions.code` and `gateway-upstream` the upstream, when there was one;
a refusal at admission adds `gateway-retry-after` (whole seconds, HTTP's `Retry-After`),
a request over the upstream-cost budget `gateway-cost` and `gateway-limit` (GraphQL's
`extensions.cost` / `extensions.limit`), a change cursor whose own or later changes are
gone `gateway-reason` (GraphQL's `extensions.reason`). A request too costly is
INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: it is refused whatever the gateway's load, and
retrying it unchanged fails again (RESOURCE_EXHAUSTED tells a caller to back off and retry,
as admission does).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc

from gateway.domain.errors import (
    CursorExpired,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    NotFound,
    Overloaded,
    TooCostly,
    Unauthenticated,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
)

log = logging.getLogger("gateway.grpc")

_CODES: dict[type[GatewayError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    # Listed: along its MRO UpstreamError comes before NotFound.
    UpstreamNotFound: grpc.StatusCode.NOT_FOUND,
    # The design's four whole-call codes: a refusal of the request as asked is its
    # INVALID_ARGUMENT; `gateway-code: UPSTREAM_REJECTED` tells it from the gateway's own.
    UpstreamRejected: grpc.StatusCode.INVALID_ARGUMENT,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    UpstreamError: grpc.StatusCode.UNAVAILABLE,
    GatewayError: grpc.StatusCode.INTERNAL,
}
_REFUSED_CREDENTIALS = frozenset({401, 403})


def status_of(error: GatewayError) -> grpc.StatusCode:
    """The status code of a whole-call failure."""
    if isinstance(error, UpstreamRejected) and error.status in _REFUSED_CREDENTIALS:
        return grpc.StatusCode.UNAUTHENTICATED
    for kind in type(error).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> NoReturn:
    """End the call with `error`'s status."""
    metadata: list[tuple[str, str]] = [("gateway-code", error.code)]
    if error.upstream is not None:
        metadata.append(("gateway-upstream", error.upstream))
    if isinstance(error, Overloaded):
        metadata.append(("gateway-retry-after", str(math.ceil(error.retry_after))))
    if isinstance(error, TooCostly):
        metadata += [("gateway-cost", str(error.cost)), ("gateway-limit", str(error.limit))]
    if isinstance(error, CursorExpired):
        metadata.append(("gateway-reason", error.reason))
    context.set_trailing_metadata(tuple(metadata))
    await context.abort(status_of(error), error.message)


async def _fail(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if isinstance(exc, GatewayError):
        log.info("%s: %s", exc.code, exc.message)
        await abort(context, exc)
    if isinstance(exc, TimeoutError):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the caller's deadline ran out")
    log.error("unexpected error in a gRPC call", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "Unexpected error")


Handler = TypeVar("Handler", bound=Callable[..., Any])


def translated(method: Handler) -> Handler:
    """Wraps a servicer method (unary or server-streaming) so that whatever it raises
    leaves as a status code; `context` is its last positional argument."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # the edge: nothing else escapes as a stack trace
                await _fail(context, exc)

        return cast(Handler, stream)

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await cast(Callable[..., Awaitable[Any]], method)(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # the edge: nothing else escapes as a stack trace
            await _fail(context, exc)

    return cast(Handler, unary)
