"""The GraphQL edge's one translation of errors.

Every error leaving `/graphql` carries `extensions.code`; errors that came from an
upstream also carry `extensions.upstream`, and, when known, `extensions.retryAfter` (whole
seconds the upstream asked for) and `extensions.reason` (why the gateway refused the call
itself, e.g. `circuit_open`). A change cursor whose own or later changes are gone is
`BAD_USER_INPUT` with `extensions.reason: "cursor_expired"`. Anything that is not a
`GatewayError` is logged here and reaches the caller only as "Unexpected error", so no stack
trace, token or upstream body ever leaks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import PreExecutionError

from gateway.domain.errors import CursorExpired, GatewayError, InternalError, UpstreamError

log = logging.getLogger("gateway.graphql")

QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
# strawberry's refusals of a request's shape (no query, an operation name the document does
# not have, an operation type the transport does not take): the caller's mistake. HTTP
# answers them 400 before execution; over WebSocket they reach the caller as errors.
REQUEST_REFUSALS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def error_code(error: GraphQLError) -> str:
    """The error's `extensions.code`. The limits (`limits.py`) and argument checks code
    their refusals where they make them; the rest is told apart by kind, never by text."""
    original = error.original_error
    if isinstance(original, GatewayError):
        return original.code
    if isinstance(original, REQUEST_REFUSALS):
        return "BAD_USER_INPUT"
    if original is not None:
        return "INTERNAL_SERVER_ERROR"
    existing = (error.extensions or {}).get("code")
    if isinstance(existing, str):
        return existing
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.path is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "BAD_USER_INPUT"


def translate(error: GraphQLError) -> GraphQLError:
    """The caller-safe form of one error, with its code."""
    original = error.original_error
    extensions: dict[str, Any] = dict(error.extensions or {})
    extensions["code"] = error_code(error)
    message = error.message
    if isinstance(original, GatewayError):
        message = original.message
        if original.upstream is not None:
            extensions["upstream"] = original.upstream
        if isinstance(original, UpstreamError):
            if original.reason is not None:
                extensions["reason"] = original.reason
            if original.retry_after is not None:
                extensions["retryAfter"] = math.ceil(original.retry_after)
        if isinstance(original, CursorExpired):
            extensions["reason"] = original.reason
    elif original is not None and not isinstance(original, REQUEST_REFUSALS):
        message = "Unexpected error"
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def _is_request_input_error(error: GraphQLError) -> bool:
    # graphql-core wraps its own coercion error when a variable's value does not fit.
    return error.path is None and (
        error.original_error is None or isinstance(error.original_error, GraphQLError)
    )


def bad_user_input(error: GraphQLError) -> GraphQLError:
    """`error` coded BAD_USER_INPUT if it is about the request's input (no path, past
    validation: a variable, the operation name), else as it is."""
    if (error.extensions or {}).get("code") or not _is_request_input_error(error):
        return error
    return GraphQLError(
        error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        extensions={**(error.extensions or {}), "code": "BAD_USER_INPUT"},
    )


class ErrorCodes(SchemaExtension):
    """Rewrites every outgoing error into its caller-safe, coded form."""

    # Set once the operation reaches execution: an error without a path after that point is
    # about the request's input, before it a parse or validation failure.
    executing = False

    def on_execute(self) -> Iterator[None]:
        self.executing = True
        yield
        # Past validation, an error without a path is about the request's input: a
        # variable that is missing or does not coerce, or an unknown operation name.
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [bad_user_input(error) for error in errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # A subscription's results go out one by one, before on_operation's end. A failure
        # before execution (parse, validation) is coded by its kind, as over HTTP; one of
        # the variables or the operation name, found as execution starts, is the input's.
        errors = getattr(result, "errors", None)
        if errors:
            if self.executing or not isinstance(result, PreExecutionError):
                errors = [bad_user_input(error) for error in errors]
            result.errors = [translate(error) for error in errors]
        yield

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [translate(error) for error in errors]


def log_errors(errors: list[GraphQLError]) -> None:
    """Expected failures are logged briefly; anything else with its traceback."""
    for error in errors:
        original = error.original_error
        if isinstance(original, InternalError):
            log.error("unexpected error at %s", error.path, exc_info=original.__cause__)
        elif isinstance(original, GatewayError):
            log.info("%s at %s: %s", original.code, error.path, original.message)
        elif (
            original is not None
            and not _is_request_input_error(error)
            and not isinstance(original, REQUEST_REFUSALS)
        ):
            log.error("unexpected error at %s", error.path, exc_info=original)
        else:
            log.debug("request refused: %s", error.message)
