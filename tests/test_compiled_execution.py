"""Compiled execution is on by default, counts what falls back to graphql-core, and a
setting switches it off without changing an answer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from graphql import get_operation_ast, parse

from gateway.domain import ids
from gateway.domain.models import LegacyAdKey, ListingRef
from gateway.graphql.compiler import compile_operation
from gateway.graphql.schema import build_schema
from gateway.graphql.variables import coerce_variables
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

LISTINGS = """query($refs: [ListingRef!]!, $first: Int, $withLegacy: Boolean!, $node: ID!) {
  listings(refs: $refs) {
    __typename id state
    ... on Node { id }
    ...Views
    portals { portal provider state since message actionRequired }
  }
  one: node(id: $node) { id ... on Listing { classifiedId } }
}
fragment Views on Listing {
  classified { id latestStatus { id status date portals }
    recent: statuses(first: $first) { edges { cursor node { id status } } pageInfo { hasNextPage endCursor } } }
  legacy @include(if: $withLegacy) { userId portals { portal publish { online startDate remoteAdId } } }
}"""


def refs(gateway: RunningGateway | RunningSimulator, count: int = 3) -> list[dict[str, Any]]:
    data = gateway.sim.data
    mine = [item for item in data.listings if data.tenant_of(item.classified_id) == "agency-1"]
    return [
        {"classifiedId": item.classified_id, "legacy": {"userId": item.user_id, "adId": item.ad_id}}
        for item in mine[:count]
    ]


def node_id(gateway: RunningGateway | RunningSimulator) -> str:
    ref = refs(gateway, 1)[0]
    return ids.listing_id(
        ListingRef(ref["classifiedId"], LegacyAdKey(ref["legacy"]["userId"], ref["legacy"]["adId"]))
    )


async def test_queries_run_compiled_and_introspection_falls_back(gateway: RunningGateway) -> None:
    stats = gateway.app.state.execution_stats
    variables = {"refs": refs(gateway), "first": 2, "withLegacy": True, "node": node_id(gateway)}
    body = await gateway.query(LISTINGS, variables)
    assert "errors" not in body, body
    assert len(body["data"]["listings"]) == 3
    assert body["data"]["one"]["classifiedId"] == body["data"]["listings"][0]["classified"]["id"]
    assert body["data"]["listings"][0]["legacy"]["portals"]
    assert (stats.compiled, stats.fallback) == (1, 0)
    introspection = await gateway.query("{ __schema { queryType { name } } }")
    assert introspection == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
    assert (stats.compiled, stats.fallback) == (1, 1)
    await gateway.query(LISTINGS, {**variables, "withLegacy": False})
    await gateway.query(LISTINGS, variables)
    assert stats.compiled == 3
    assert stats.plans_built == 3  # one per @include value, and one for the introspection


async def test_switched_off_graphql_core_gives_the_same_answer(
    simulator: RunningSimulator,
) -> None:
    variables = {
        "refs": refs(simulator, 5),
        "first": 1,
        "withLegacy": True,
        "node": node_id(simulator),
    }
    simulator.sim.state.add_fault(
        "v3", "error", status=403, endpoint="classified_statuses", count=1
    )
    answers = []
    for compiled in (True, False):
        async with run_gateway(simulator, compiled_execution=compiled) as gateway:
            answers.append(await gateway.query(LISTINGS, variables))
            stats = gateway.app.state.execution_stats
            assert (stats.compiled, stats.interpreted) == ((1, 0) if compiled else (0, 1))
        simulator.sim.state.add_fault(
            "v3", "error", status=403, endpoint="classified_statuses", count=1
        )
    on, off = answers
    assert on == off
    assert {e["extensions"]["code"] for e in on["errors"]} == {
        "UPSTREAM_REJECTED",
    }


PORTALS_ONLY = "query { listings(refs: []) { id: __typename portals { portal provider state } } }"


def _portal(provider: str | None) -> SimpleNamespace:
    return SimpleNamespace(portal="SL", provider=provider, state="ONLINE")


def _compiled_from_errors(project: Any) -> set[str]:
    """The generated functions of `project`'s operation compiled from its careful source."""
    return {
        name
        for name, value in project.__globals__.items()
        if getattr(getattr(value, "__code__", None), "co_filename", "").endswith("errors>")
    }


def test_the_careful_functions_are_compiled_when_a_fast_check_first_fails() -> None:
    schema = build_schema()._schema
    operation = get_operation_ast(parse(PORTALS_ONLY))
    assert operation is not None
    compiled = compile_operation(schema, operation, {}, coerce_variables(schema, operation, {}))
    assert compiled is not None
    listing = SimpleNamespace(ref=None, portals=[_portal("LEGACY"), _portal("V3")])
    errors: list[Any] = []
    # Well-formed objects take the fast functions only: nothing more is compiled.
    assert compiled.project([[listing]], [], errors) == {
        "listings": [{"id": "Listing", "portals": [
            {"portal": "SL", "provider": "LEGACY", "state": "ONLINE"},
            {"portal": "SL", "provider": "V3", "state": "ONLINE"},
        ]}]
    }  # fmt: skip
    assert errors == []
    assert _compiled_from_errors(compiled.project) == set()
    # A null in a non-null leaf: the careful function is compiled, and it locates the
    # error and nulls the nearest nullable parent as graphql-core does.
    broken = SimpleNamespace(ref=None, portals=[_portal("LEGACY"), _portal(None)])
    assert compiled.project([[broken]], [], errors) == {
        "listings": [{"id": "Listing", "portals": None}]
    }
    assert [(error.message, error.path) for error in errors] == [
        (
            "Cannot return null for non-nullable field PortalStatus.provider.",
            ["listings", 0, "portals", 1, "provider"],
        )
    ]
    assert len(_compiled_from_errors(compiled.project)) == 1
