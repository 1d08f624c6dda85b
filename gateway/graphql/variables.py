"""A request's variables, coerced once for every check that runs before execution and for
the execution itself.

The argument checks, the cost limit and the executor all need the coerced variables; for a
50-listing query coercing `$refs` is a noticeable share of the request. The same raw
variables dict and operation node reach all three, so the result is kept by their identity
(checked, not just their ids) for the few requests in flight. Each operation's variables
are coerced by a plan made for their types where one fits (`gateway.graphql.coercion`),
else by graphql-core.
"""

from __future__ import annotations

import weakref
from typing import Any, Final

from cachetools import LRUCache
from graphql import GraphQLError, GraphQLSchema, OperationDefinitionNode
from graphql.execution.values import VariableValues, get_variable_values

from gateway.graphql.coercion import VariablePlan, variable_plan

Coerced = VariableValues | list[GraphQLError]
_EMPTY: dict[str, Any] = {}
# The argument checks and the cost limit run one after the other for a request, without an
# await between them: a few entries are enough, and each holds its operation (so its
# document) alive, which many would do for large documents long after their requests.
_recent: LRUCache[tuple[int, int], tuple[object, object, Coerced]] = LRUCache(maxsize=4)
# One plan per operation node of the documents in use (the parse cache keeps those alive);
# a weak reference, so a plan never keeps its document.
_PLANS: Final = 1024
_plans: LRUCache[int, tuple[weakref.ref[OperationDefinitionNode], VariablePlan | None]] = LRUCache(
    maxsize=_PLANS
)


def coerce_variables(
    schema: GraphQLSchema, operation: OperationDefinitionNode, raw: dict[str, Any] | None
) -> Coerced:
    """`get_variable_values` for this operation, computed once per (operation, raw dict)."""
    raw = _EMPTY if raw is None else raw
    key = (id(operation), id(raw))
    hit = _recent.get(key)
    if hit is not None and hit[0] is operation and hit[1] is raw:
        return hit[2]
    plan = _plan(schema, operation)
    planned = plan.coerce(raw) if plan is not None else None
    coerced: Coerced = (
        planned
        if planned is not None
        else get_variable_values(schema, operation.variable_definitions or (), raw)
    )
    _recent[key] = (operation, raw, coerced)
    return coerced


def _plan(schema: GraphQLSchema, operation: OperationDefinitionNode) -> VariablePlan | None:
    found = _plans.get(id(operation))
    if found is not None and found[0]() is operation:
        return found[1]
    plan = variable_plan(schema, operation.variable_definitions or ())
    _plans[id(operation)] = (weakref.ref(operation), plan)
    return plan


def forget_variables(operation: OperationDefinitionNode, raw: dict[str, Any] | None) -> None:
    """Let go of what `coerce_variables` kept for this operation and raw dict, once the
    checks that share it have run."""
    raw = _EMPTY if raw is None else raw
    _recent.pop((id(operation), id(raw)), None)
