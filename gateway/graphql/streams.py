"""Subscriptions that hold little while they wait for events.

strawberry runs a subscription as one pipeline that lives as long as the subscription: the
schema extensions' hooks and contexts, the graphql-core executor built for the operation and
the mapping of source events to results all wait with it (~21 KB per idle subscription,
`bench/subscriptions.py`). Here only the source stream waits — the subscription resolver's
async generator over its event queue — and each event is executed by an executor built for
it and dropped after.

This path takes a subscription only when strawberry's would answer it the same way: its
document was parsed and validated by this app before, without errors (a board's one
document, subscribed to by many; strawberry's path parses and validates it the first time),
it has one root field and no directive on it, its variables coerce, and the argument and
cost checks pass. Anything else goes to strawberry's path, which answers exactly as it did.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
)
from graphql import ExecutionResult as CoreResult
from graphql.execution import create_source_event_stream, execute_subscription_event
from graphql.execution.values import get_variable_values
from strawberry.types.execution import ExecutionResult, PreExecutionError

from gateway.graphql.arguments import argument_errors
from gateway.graphql.cost import cost_errors
from gateway.graphql.errors import log_errors, translate
from gateway.graphql.limits import ParsedDocuments
from gateway.graphql.memo import DocumentMemo

log = logging.getLogger("gateway.graphql")

Results = AsyncGenerator[ExecutionResult | PreExecutionError, None]


@dataclass(slots=True)
class LeanSubscriptions:
    """What this path needs of the app: its parsed documents, the validation memo, and the
    argument and cost limits; `taken` counts the subscriptions it ran."""

    documents: ParsedDocuments
    validated: DocumentMemo[list[GraphQLError]]
    max_listings: int
    max_root_fields: int
    max_cost: int
    taken: int = 0

    def document(
        self,
        schema: GraphQLSchema,
        query: str | None,
        operation_name: str | None,
        variables: dict[str, Any] | None,
    ) -> DocumentNode | None:
        """The parsed document, if this path may run the subscription; else None."""
        if not query:
            return None
        document = self.documents.get(query)
        if document is None or self.validated.get(document) != []:
            return None
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.SUBSCRIPTION:
            return None
        [*selections] = operation.selection_set.selections
        if len(selections) != 1:
            return None
        [root] = selections
        if not isinstance(root, FieldNode) or root.directives:
            return None
        coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
        if isinstance(coerced, list):
            return None
        if self._refused(schema, document, operation, operation_name, variables or {}):
            return None
        return document

    def _refused(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        operation_name: str | None,
        variables: dict[str, Any],
    ) -> bool:
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        return bool(
            argument_errors(schema, document, operation_name, variables, self.max_listings)
            or cost_errors(
                schema,
                operation,
                fragments,
                variables,
                max_root_fields=self.max_root_fields,
                max_cost=self.max_cost,
            )
        )


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
