"""A request's variables coerced by code made once per operation for their types.

graphql-core coerces variables with one general walk: for every value it asks what kind of
type it has, checks the nesting depth in a second walk, and builds each error on the way.
For `$refs: [ListingRef!]!` with 50 refs that is ~0.5 ms, and a request coerced its
variables twice (the checks before execution, then graphql-core's executor). Here each
operation's variable definitions become a chain of small functions fitted to their types
(`VariablePlan`) that coerce a well-formed value directly. Whatever they are not sure of —
a value of another shape (anything that would be an error), a missing variable with a
default, a custom scalar that refuses — makes the plan step aside and graphql-core coerce
the variables as before, so errors keep graphql-core's wording and order. What a plan
returns is equal to what `graphql.execution.values.get_variable_values` returns for the
same input (`tests/test_variable_coercion.py` holds them to it over generated values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from typing import Any, Final

from graphql import (
    GraphQLBoolean,
    GraphQLError,
    GraphQLFloat,
    GraphQLID,
    GraphQLInputType,
    GraphQLInt,
    GraphQLSchema,
    GraphQLString,
    Undefined,
    VariableDefinitionNode,
    is_input_object_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_required_input_field,
)
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import VariableValues, VariableValueSource
from graphql.utilities.coerce_input_value import coerce_default_value

__all__ = ["VariablePlan", "variable_plan"]

Coerce = Callable[[Any], Any]

_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
# Defaults a plan may hand to every request as they are: nothing a caller could mutate.
_IMMUTABLE: Final = (str, int, float, bool, type(None))


class _Unsure(Exception):
    """The value is not one the plan coerces: graphql-core decides."""


def _non_null(inner: Coerce) -> Coerce:
    def coerce(value: Any) -> Any:
        if value is None:
            raise _Unsure
        return inner(value)

    return coerce


def _list(item: Coerce) -> Coerce:
    def coerce(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not list:
            raise _Unsure  # a single value taken as a list of one, or an error
        return [item(each) for each in value]

    return coerce


def _text(value: Any) -> Any:
    # ID and String alike: a string is itself (an ID given as a number is graphql-core's).
    if type(value) is str or value is None:
        return value
    raise _Unsure


def _int(value: Any) -> Any:
    if value is None or (type(value) is int and _INT_MIN <= value <= _INT_MAX):
        return value
    raise _Unsure


def _boolean(value: Any) -> Any:
    if type(value) is bool or value is None:
        return value
    raise _Unsure


def _float(value: Any) -> Any:
    if value is None or (type(value) is float and math.isfinite(value)):
        return value
    raise _Unsure


_SCALARS: Final[dict[object, Coerce]] = {
    GraphQLID: _text,
    GraphQLString: _text,
    GraphQLInt: _int,
    GraphQLBoolean: _boolean,
    GraphQLFloat: _float,
}


def _leaf(type_: Any) -> Coerce:
    parse = type_.coerce_input_value

    def coerce(value: Any) -> Any:
        if value is None:
            return None
        try:
            coerced = parse(value)
        except Exception as refused:  # graphql-core turns any failure into an error
            raise _Unsure from refused
        if coerced is Undefined:
            raise _Unsure
        return coerced

    return coerce


def _input_object(type_: Any) -> Coerce | None:
    if type_.is_one_of:
        return None
    fields: list[tuple[str, str, Coerce, bool, Any]] = []
    for name, field in type_.fields.items():
        inner = _coercer(field.type)
        if inner is None:
            return None
        required = is_required_input_field(field)
        default = Undefined if required else coerce_default_value(field)
        if default is not Undefined and not isinstance(default, _IMMUTABLE):
            return None
        fields.append((name, field.out_name or name, inner, required, default))
    names = frozenset(type_.fields)
    out_type = type_.out_type

    def coerce(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is not dict or not names.issuperset(value):
            raise _Unsure
        coerced: dict[str, Any] = {}
        for name, out_name, inner, required, default in fields:
            given = value.get(name, Undefined)
            if given is not Undefined:
                coerced[out_name] = inner(given)
            elif required:
                raise _Unsure
            elif default is not Undefined:
                coerced[out_name] = default
        return out_type(coerced)

    return coerce


def _coercer(type_: GraphQLInputType) -> Coerce | None:
    """The coercion of values of `type_`, or None when a plan would not be sure of it."""
    if is_non_null_type(type_):
        inner = _coercer(type_.of_type)
        return None if inner is None else _non_null(inner)
    if is_list_type(type_):
        item = _coercer(type_.of_type)
        return None if item is None else _list(item)
    if is_input_object_type(type_):
        return _input_object(type_)
    if is_leaf_type(type_):
        return _SCALARS.get(type_) or _leaf(type_)
    return None


class VariablePlan:
    """The coercion of one operation's variables; `coerce` answers None where graphql-core
    must do it."""

    __slots__ = ("_variables",)

    def __init__(self, variables: list[tuple[str, GraphQLVariableSignature, Coerce, bool]]):
        # (name, signature, coercion, whether an absent value needs graphql-core)
        self._variables = variables

    def coerce(self, raw: dict[str, Any]) -> VariableValues | None:
        sources: dict[str, VariableValueSource] = {}
        coerced: dict[str, Any] = {}
        for name, signature, coerce, absent_needs_core in self._variables:
            value = raw.get(name, Undefined)
            if value is Undefined:
                if absent_needs_core:
                    return None  # a default to apply, or a required variable missing
                sources[name] = VariableValueSource(signature)
                continue
            sources[name] = VariableValueSource(signature, value)
            try:
                coerced[name] = coerce(value)
            except _Unsure:
                return None
        return VariableValues(sources, coerced)


def variable_plan(
    schema: GraphQLSchema, definitions: Collection[VariableDefinitionNode]
) -> VariablePlan | None:
    """The plan for these variable definitions, or None when graphql-core must always
    coerce them (a type no plan covers, a definition graphql-core refuses)."""
    variables: list[tuple[str, GraphQLVariableSignature, Coerce, bool]] = []
    for definition in definitions:
        signature = get_variable_signature(schema, definition)
        if isinstance(signature, GraphQLError):
            return None
        coerce = _coercer(signature.type)
        if coerce is None:
            return None
        absent_needs_core = bool(definition.default_value) or is_non_null_type(signature.type)
        variables.append((signature.name, signature, coerce, absent_needs_core))
    return VariablePlan(variables)
