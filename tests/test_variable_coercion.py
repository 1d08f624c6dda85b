"""Variables coerced by a plan made for their types (gateway.graphql.coercion) equal what
graphql-core makes of them, or the plan steps aside and graphql-core decides.

hypothesis writes values close to the real variables' shapes — well-formed refs, refs with a
field missing, of another type, an unknown key, nulls where none may be, single values where
lists are expected, numbers out of Int's range, floats for IDs, enum names that exist and
that do not — against the real schema's types.
"""

from __future__ import annotations

from typing import Any

import pytest
from graphql import GraphQLSchema, OperationDefinitionNode, parse
from graphql.execution.values import VariableValues, get_variable_values
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.graphql.schema import build_schema
from gateway.graphql.variables import coerce_variables

DEFINITIONS = (
    "$refs: [ListingRef!]!, $ref: ListingRef, $required: ListingRef!, $first: Int, "
    "$after: String, $id: ID!, $statuses: [ClassifiedStatusCode!], $flag: Boolean, "
    "$defaulted: Int = 5, $legacy: LegacyAdRef"
)
DOCUMENT = f"query Q({DEFINITIONS}) {{ __typename }}"


@pytest.fixture(scope="module")
def core() -> tuple[GraphQLSchema, OperationDefinitionNode]:
    schema = build_schema()._schema
    operation = parse(DOCUMENT).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return schema, operation


def _comparable(values: VariableValues) -> tuple[Any, ...]:
    # Each coercion builds its own wrapper types ([ListingRef!]! ...): compare them printed.
    sources = [
        (name, source.signature.name, str(source.signature.type), source.value)
        for name, source in values.sources.items()
    ]
    return (sources, values.coerced)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["CREATED", "DELETED", "created", "NOPE", "cls-1"]),
)
legacy_refs = st.one_of(
    st.fixed_dictionaries({"userId": st.integers(1, 99), "adId": st.integers(1, 9999)}),
    st.dictionaries(st.sampled_from(["userId", "adId", "other"]), scalars, max_size=3),
    scalars,
)
refs = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "classifiedId": st.one_of(st.text(max_size=8), scalars),
            "legacy": legacy_refs,
        },
    ),
    st.dictionaries(st.sampled_from(["classifiedId", "legacy", "extra"]), scalars, max_size=3),
    scalars,
)
well_formed_refs = st.fixed_dictionaries(
    {},
    optional={
        "classifiedId": st.text(max_size=8),
        "legacy": st.fixed_dictionaries({"userId": st.integers(1, 99), "adId": st.integers(1, 99)}),
    },
)


def mostly(well_formed: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
    """Well-formed three times in four, so that the plan, not only graphql-core, is tried."""
    return st.integers(0, 3).flatmap(lambda n: other if n == 0 else well_formed)


values = st.fixed_dictionaries(
    {
        "refs": mostly(st.lists(well_formed_refs, max_size=4), st.lists(refs, max_size=4)),
        "required": mostly(well_formed_refs, refs),
        "id": mostly(st.text(max_size=4), scalars),
        "defaulted": mostly(st.integers(0, 9), scalars),
    },
    optional={
        "ref": mostly(well_formed_refs, refs),
        "first": mostly(st.integers(-(2**31), 2**31 - 1), scalars),
        "after": mostly(st.text(max_size=4) | st.none(), scalars),
        "statuses": mostly(
            st.lists(st.sampled_from(["CREATED", "DELETED"]), max_size=3),
            st.lists(st.sampled_from(["CREATED", "NOPE", None]), max_size=3) | scalars,
        ),
        "flag": mostly(st.booleans(), scalars),
        "legacy": mostly(st.none(), legacy_refs),
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=values)
def test_a_plan_coerces_as_graphql_core_does(
    core: tuple[GraphQLSchema, OperationDefinitionNode], raw: dict[str, Any]
) -> None:
    schema, operation = core
    expected = get_variable_values(schema, operation.variable_definitions, raw)
    got = coerce_variables(schema, operation, raw)
    planned = coerce_variables.__globals__["_plan"](schema, operation).coerce(raw)
    event("planned" if planned is not None else "graphql-core")
    if isinstance(expected, list):
        assert isinstance(got, list)
        assert [e.formatted for e in got] == [e.formatted for e in expected]
    else:
        assert isinstance(got, VariableValues)
        assert _comparable(got) == _comparable(expected)


def test_well_formed_refs_take_the_plan_and_anything_else_graphql_core(
    core: tuple[GraphQLSchema, OperationDefinitionNode],
) -> None:
    """The plan is what coerces the common case; graphql-core what reports errors."""
    schema, operation = core
    refs = [{"classifiedId": "cls-1"}, {"legacy": {"userId": 7, "adId": 12}}]
    plan_of = coerce_variables.__globals__["_plan"]
    plan = plan_of(schema, operation)
    assert plan is not None
    well_formed = {"refs": refs, "required": refs[0], "id": "x", "defaulted": 3}
    planned = plan.coerce(well_formed)
    assert planned is not None
    assert planned.coerced["refs"] == [
        {"classifiedId": "cls-1", "legacy": None},
        {"classifiedId": None, "legacy": {"userId": 7, "adId": 12}},
    ]
    # Left to graphql-core: an error to word, a default to apply.
    assert plan.coerce({**well_formed, "first": 2**31}) is None
    assert plan.coerce({**well_formed, "refs": [{"legacy": {"userId": 7}}]}) is None
    assert plan.coerce({k: v for k, v in well_formed.items() if k != "defaulted"}) is None
