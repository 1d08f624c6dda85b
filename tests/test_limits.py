"""The request limits as validation rules: depth and aliases through fragments, tokens."""

from __future__ import annotations

import pytest
from graphql import GraphQLError, build_schema, get_introspection_query, parse, validate

from gateway.domain.errors import InvalidInput
from gateway.domain.models import ClassifiedStatusCode
from gateway.graphql.errors import error_code
from gateway.graphql.limits import (
    QUERY_TOO_COMPLEX,
    IntrospectionDepthLimit,
    alias_rule,
    depth_rule,
    over_token_limit,
)
from gateway.service.checks import check_status_filter

SCHEMA = build_schema("type Query { a: A }  type A { a: A  b: Int }")


def refusals(query: str, *rules: type) -> list[GraphQLError]:
    return validate(SCHEMA, parse(query), list(rules))


def nested(levels: int) -> str:
    return "{ " + "a { " * levels + "b" + " }" * levels + " }"


def test_depth_counts_the_deepest_field_through_fragments_and_inline_fragments() -> None:
    assert refusals(nested(3), depth_rule(3)) == []
    [error] = refusals(nested(4), depth_rule(3))
    assert error.extensions == {"code": QUERY_TOO_COMPLEX}
    assert error_code(error) == QUERY_TOO_COMPLEX
    spread = "{ a { ...F } } fragment F on A { ... on A { a { a { b } } } }"
    assert refusals(spread, depth_rule(3)) == []
    assert len(refusals(spread, depth_rule(2))) == 1


def test_depth_counts_introspection_fields() -> None:
    assert (
        len(refusals("{ __schema { types { ofType { ofType { name } } } } }", depth_rule(3))) == 1
    )
    graphiql = get_introspection_query(descriptions=True, input_value_deprecation=True)
    assert refusals(graphiql, depth_rule(20)) == []


def test_aliases_count_once_per_spread_and_fragment_fan_out_stays_cheap() -> None:
    fan_out = "{ ...F0 } " + " ".join(
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(30)
    )
    fan_out += " fragment F30 on Query { x: a { b } }"
    # 2**30 aliases once expanded: counted per fragment, not by expanding it.
    [error] = refusals(fan_out, alias_rule(200))
    assert str(2**30) in error.message
    assert refusals("{ x: a { y: b } }", alias_rule(2)) == []
    assert len(refusals("{ x: a { y: b } z: a { b } }", alias_rule(2))) == 1


def test_cyclic_fragments_do_not_loop() -> None:
    cyclic = "{ ...F } fragment F on Query { a { ...G } } fragment G on A { ...F2 } fragment F2 on A { ...G }"
    assert refusals(cyclic, depth_rule(5), alias_rule(5)) == []


def test_introspection_depth_rule_refusals_are_coded() -> None:
    deep = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }"
    [error] = refusals(deep, IntrospectionDepthLimit)
    assert error_code(error) == QUERY_TOO_COMPLEX


@pytest.mark.parametrize(
    ("query", "limit", "over"),
    [
        ("{ a }", 3, False),
        ("{ a }", 2, True),
        ("# one\n# two\n{ a }", 4, True),  # comments count, as the parser counts them
        ("{ a ∆ " + "b " * 100 + "}", 10, False),  # a lexical error first: malformed, not long
    ],
)
def test_token_count(query: str, limit: int, over: bool) -> None:
    assert over_token_limit(query, limit) is over


def test_unknown_is_not_a_status_filter() -> None:
    check_status_filter([ClassifiedStatusCode.CREATED, "DELETED"])
    with pytest.raises(InvalidInput, match="UNKNOWN"):
        check_status_filter([ClassifiedStatusCode.CREATED, ClassifiedStatusCode.UNKNOWN])
