"""A request's variables, coerced once for every check that runs before execution.

The argument checks and the cost limit both need the coerced variables; for a
50-listing query coercing `$refs` is a noticeable share of the request. The same raw
variables dict and operation node reach both, so the result is kept by their identity
(checked, not just their ids) for the few requests in flight.
"""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache
from graphql import GraphQLError, GraphQLSchema, OperationDefinitionNode
from graphql.execution.values import VariableValues, get_variable_values

Coerced = VariableValues | list[GraphQLError]
_EMPTY: dict[str, Any] = {}
# The argument checks and the cost limit run one after the other for a request, without an
# await between them: a few entries are enough, and each holds its operation (so its
# document) alive, which many would do for large documents long after their requests.
_recent: LRUCache[tuple[int, int], tuple[object, object, Coerced]] = LRUCache(maxsize=4)


def coerce_variables(
    schema: GraphQLSchema, operation: OperationDefinitionNode, raw: dict[str, Any] | None
) -> Coerced:
    """`get_variable_values` for this operation, computed once per (operation, raw dict)."""
    raw = _EMPTY if raw is None else raw
    key = (id(operation), id(raw))
    hit = _recent.get(key)
    if hit is not None and hit[0] is operation and hit[1] is raw:
        return hit[2]
    coerced = get_variable_values(schema, operation.variable_definitions or (), raw)
    _recent[key] = (operation, raw, coerced)
    return coerced


def forget_variables(operation: OperationDefinitionNode, raw: dict[str, Any] | None) -> None:
    """Let go of what `coerce_variables` kept for this operation and raw dict, once the
    checks that share it have run."""
    raw = _EMPTY if raw is None else raw
    _recent.pop((id(operation), id(raw)), None)
