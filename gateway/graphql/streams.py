"""Subscriptions that hold little while they wait for events.

strawberry runs a subscription as one pipeline that lives as long as the subscription: the
schema extensions' hooks and contexts, the graphql-core executor built for the operation and
the mapping of source events to results all wait with it (~21 KB per idle subscription,
`bench/subscriptions.py`). Here only the source stream waits — the subscription resolver's
async generator over its event queue — and each event is executed by an executor built for
it and dropped after.

This path takes a subscription only when strawberry's would answer it the same way
(`gateway.graphql.known`: a document this app parsed and validated before without errors,
one root field without directives, variables that coerce, argument and cost checks that
pass). Anything else goes to strawberry's path, which answers exactly as it did.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, cast

from graphql import DocumentNode, GraphQLError, GraphQLSchema
from graphql import ExecutionResult as CoreResult
from graphql.execution import create_source_event_stream, execute_subscription_event
from strawberry.types.execution import ExecutionResult, PreExecutionError

from gateway.graphql.errors import log_errors, translate

Results = AsyncGenerator[ExecutionResult | PreExecutionError, None]


async def lean_stream(
    schema: GraphQLSchema,
    executor_class: Any,
    document: DocumentNode,
    *,
    context: Any,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    on_subscribed: Callable[[], None],
) -> Results:
    """The results of one subscription, as strawberry's `Schema.stream` yields them;
    `on_subscribed` runs once the source stream exists."""

    def build() -> Any:
        return executor_class.build(schema, document, None, context, variables, operation_name)

    executor = build()
    if isinstance(executor, list):  # the variables were checked; they coerce again
        yield PreExecutionError(data=None, errors=_coded(executor))
        return
    try:
        source: Any = create_source_event_stream(executor)
        if executor.is_awaitable(source):
            source = await source
    except Exception as exc:  # answered as the field's error, as graphql-core does
        yield ExecutionResult(data=None, errors=_coded([_as_graphql_error(exc)]))
        return
    del executor  # its state is what this path does not keep
    on_subscribed()
    if isinstance(source, CoreResult):
        yield ExecutionResult(data=source.data, errors=_coded(source.errors or []))
        return
    events = cast(AsyncIterator[Any], source)
    try:
        async with aclosing(cast(Any, events)):
            async for payload in events:
                result = execute_subscription_event(build().build_per_event_executor(payload))
                if not isinstance(result, CoreResult):
                    result = await result
                yield ExecutionResult(
                    data=result.data,
                    errors=_coded(result.errors) if result.errors else None,
                    extensions=result.extensions,
                )
    except Exception as exc:  # as strawberry: one last result with the error
        yield ExecutionResult(data=None, errors=_coded([_as_graphql_error(exc)]))


def _as_graphql_error(exc: Exception) -> GraphQLError:
    if isinstance(exc, GraphQLError):
        return exc
    return GraphQLError(str(exc), original_error=exc)


def _coded(errors: list[GraphQLError]) -> list[GraphQLError]:
    log_errors(errors)
    return [translate(error) for error in errors]
