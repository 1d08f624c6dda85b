"""Cost limits checked before execution: how many root fields, and how many upstream reads.

Depth, aliases and tokens bound the document; these bound what it sets in motion. The
root fields (after fragments and `@skip`/`@include`; `__typename` is free) are counted against
`GATEWAY_MAX_ROOT_FIELDS`; the listing root fields' refs and selections are priced together
by the service's own estimate (`gateway.service.plan_cost.request_cost`, a listing asked by
several root fields once for all they ask, as the service plans it) and held against
`GATEWAY_MAX_UPSTREAM_COST`. A request over either is refused with `QUERY_TOO_COMPLEX`
and `extensions.cost` / `extensions.limit`, before any upstream call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import (
    ExecutionResult,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
)
from graphql.execution.values import VariableValues, get_argument_values
from strawberry.extensions import SchemaExtension

from gateway.domain import ids
from gateway.domain.errors import GatewayError, TooCostly
from gateway.domain.models import ListingRef
from gateway.graphql.errors import QUERY_TOO_COMPLEX
from gateway.graphql.inputs import ref_from_arguments
from gateway.graphql.selections import fields_of, listing_selection
from gateway.graphql.variables import coerce_variables
from gateway.service.plan_cost import check_cost, request_cost


def _refs(name: str, args: dict[str, Any]) -> list[ListingRef] | None:
    if name in ("listing", "refreshListing"):
        return [ref_from_arguments(args["ref"])]
    if name == "listings":
        return [ref_from_arguments(ref) for ref in args["refs"]]
    if name == "node":
        return [ids.listing_ref(str(args["id"]))]
    return None


def operation_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, Any],
    variables: VariableValues,
) -> tuple[int, int]:
    """(root fields, upstream read estimate) of one operation with its variables."""
    root_type = schema.get_root_type(operation.operation)
    assert isinstance(root_type, GraphQLObjectType)
    # `__typename` costs nothing and is not counted.
    roots = [
        node
        for node in fields_of(operation.selection_set.selections, fragments, variables)
        if node.name.value != "__typename"
    ]
    asks = []
    for node in roots:
        field = root_type.fields.get(node.name.value)
        if field is None:
            continue
        args = get_argument_values(field, node, variables)
        refs = _refs(node.name.value, args)
        if refs is None:
            continue
        asks.append((refs, listing_selection(schema, fragments, variables, [node])))
    if not asks:
        return len(roots), 0
    # Priced as the service plans it: a listing asked by several root fields, once for all.
    refresh = operation.operation is OperationType.MUTATION
    return len(roots), request_cost(asks, refresh=refresh)


def cost_errors(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    raw_variables: dict[str, Any] | None,
    *,
    max_root_fields: int,
    max_cost: int,
) -> list[GraphQLError]:
    coerced = coerce_variables(schema, operation, raw_variables)
    if isinstance(coerced, list):
        return []  # bad variables: execution reports them itself
    try:
        roots, cost = operation_cost(schema, operation, fragments, coerced)
    except (GraphQLError, GatewayError):
        return []  # an argument the argument checks or execution will report
    if roots > max_root_fields:
        return [
            _too_complex(
                f"{roots} root fields; at most {max_root_fields} are allowed",
                operation,
                cost=roots,
                limit=max_root_fields,
            )
        ]
    try:
        check_cost(cost, max_cost)
    except TooCostly as refused:
        return [_too_complex(refused.message, operation, cost=refused.cost, limit=refused.limit)]
    return []


def _too_complex(
    message: str, operation: OperationDefinitionNode, *, cost: int, limit: int
) -> GraphQLError:
    return GraphQLError(
        message, operation, extensions={"code": QUERY_TOO_COMPLEX, "cost": cost, "limit": limit}
    )


class CostLimit(SchemaExtension):
    """Refuses an operation with too many root fields or too high an upstream cost."""

    def __init__(self, *, max_root_fields: int, max_cost: int) -> None:
        self.max_root_fields = max_root_fields
        self.max_cost = max_cost

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.result is None and document is not None:
            operation = get_operation_ast(document, context.operation_name)
            if operation is not None:
                fragments = {
                    d.name.value: d
                    for d in document.definitions
                    if isinstance(d, FragmentDefinitionNode)
                }
                errors = cost_errors(
                    context.schema._schema,
                    operation,
                    fragments,
                    context.variables,
                    max_root_fields=self.max_root_fields,
                    max_cost=self.max_cost,
                )
                if errors:
                    context.result = ExecutionResult(data=None, errors=errors)
                    request_context = context.context
                    if hasattr(request_context, "request_error"):
                        request_context.request_error = True
        yield
