"""Queries whose document the app already knows skip strawberry's extension hooks
(`GatewaySchema.execute_known`, gateway.graphql.known) and answer exactly as before.

Each case is sent twice to one gateway: the first request takes strawberry's path (which
parses and validates the document), the second the known-document path when it may. Both
answers must be the same, status, headers and body.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.graphql.variables import _recent as recent
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

LISTING = """
query Board($refs: [ListingRef!]!) {
  listings(refs: $refs) {
    id state portals { portal provider state }
    classified { latestStatus { status date } }
    legacy { portals { portal publish { online } } }
  }
}"""
GRAPHQL_RESPONSE = "application/graphql-response+json"


def known_queries(gateway: RunningGateway) -> int:
    known = gateway.app.state.graphql.schema.known
    assert known is not None
    count: int = known.queries
    return count


def refs_of(gateway: RunningGateway, count: int) -> list[dict[str, Any]]:
    mine = set(gateway.sim.data.tenants["agency-1"])
    listings = [entry for entry in gateway.sim.data.listings if entry.classified_id in mine]
    return [{"classifiedId": c, "legacy": {"userId": u, "adId": a}} for c, u, a in listings[:count]]


async def twice(gateway: RunningGateway, **body: Any) -> tuple[httpx.Response, httpx.Response]:
    async def send() -> httpx.Response:
        headers = {"accept": GRAPHQL_RESPONSE}
        return await gateway.client.post("/graphql", json=body, headers=headers)

    return await send(), await send()


def same(first: httpx.Response, second: httpx.Response) -> None:
    assert (first.status_code, first.headers["content-type"]) == (
        second.status_code,
        second.headers["content-type"],
    )
    assert first.json() == second.json()


async def test_a_known_query_skips_the_hooks_and_answers_the_same(
    simulator: RunningSimulator,
) -> None:
    async with run_gateway(simulator) as gateway:
        body = {"query": LISTING, "variables": {"refs": refs_of(gateway, 3)}}
        first, second = await twice(gateway, **body)
        same(first, second)
        assert known_queries(gateway) == 1
        assert len(first.json()["data"]["listings"]) == 3 and "errors" not in first.json()


async def test_field_errors_are_the_same_on_both_paths(simulator: RunningSimulator) -> None:
    async with run_gateway(simulator, legacy_cache_ttl_s=0) as gateway:
        simulator.sim.state.add_fault("legacy", "error", status=500)
        body = {"query": LISTING, "variables": {"refs": refs_of(gateway, 2)}}
        first, second = await twice(gateway, **body)
        same(first, second)
        assert known_queries(gateway) == 1
        errors = first.json()["errors"]
        assert {e["extensions"]["code"] for e in errors} == {"UPSTREAM_UNAVAILABLE"}
        assert {e["extensions"]["upstream"] for e in errors} == {"legacy"}


@pytest.mark.parametrize(
    ("variables", "name"),
    [
        pytest.param({}, None, id="variable-missing"),
        pytest.param({"refs": [{"colour": "red"}]}, None, id="variable-of-the-wrong-type"),
        pytest.param({"refs": [{"classifiedId": f"c-{n}"} for n in range(201)]}, None, id="201"),
        pytest.param({"refs": []}, "Elsewhere", id="unknown-operation-name"),
    ],
)
async def test_refusals_take_strawberrys_path_and_are_the_same(
    simulator: RunningSimulator, variables: dict[str, Any], name: str | None
) -> None:
    async with run_gateway(simulator) as gateway:
        # The document becomes known first.
        known = await gateway.query(LISTING, {"refs": refs_of(gateway, 1)})
        assert "errors" not in known
        body: dict[str, Any] = {"query": LISTING, "variables": variables}
        if name is not None:
            body["operationName"] = name
        first, second = await twice(gateway, **body)
        same(first, second)
        assert known_queries(gateway) == 0  # refused: never the known-document path
        assert first.status_code == 400
        assert {e["extensions"]["code"] for e in first.json()["errors"]} == {"BAD_USER_INPUT"}


async def test_a_known_query_over_get_answers_the_same(simulator: RunningSimulator) -> None:
    async with run_gateway(simulator) as gateway:
        query = "{ __typename }"
        first = await gateway.client.get("/graphql", params={"query": query})
        second = await gateway.client.get("/graphql", params={"query": query})
        same(first, second)
        assert first.json() == {"data": {"__typename": "Query"}}
        assert known_queries(gateway) == 1


async def test_a_query_keeps_no_variables_past_its_execution(
    simulator: RunningSimulator,
) -> None:
    # The argument and cost checks and the executor share one coercion of the variables;
    # once the executor has it, a request's variables (a thousand refs, for a large one) must
    # not stay behind, on strawberry's path or the known one.
    async with run_gateway(simulator) as gateway:
        body = {"query": LISTING, "variables": {"refs": refs_of(gateway, 3)}}
        recent.clear()
        first = await gateway.client.post("/graphql", json=body)  # strawberry's path
        assert [raw for _, raw, _ in recent.values() if raw == body["variables"]] == []
        second = await gateway.client.post("/graphql", json=body)  # the known path
        same(first, second)
        assert known_queries(gateway) == 1
        assert [raw for _, raw, _ in recent.values() if raw == body["variables"]] == []


async def test_two_apps_in_one_process_keep_their_own_documents_and_limits(
    simulator: RunningSimulator,
) -> None:
    # The converted schema is made once per process (`gateway.graphql.schema`); what an app
    # learns and the limits it was given stay its own.
    async with (
        run_gateway(simulator, max_listings=1) as strict,
        run_gateway(simulator) as lenient,
    ):
        assert strict.app.state.graphql.schema._schema is lenient.app.state.graphql.schema._schema
        one = await strict.query(LISTING, {"refs": refs_of(strict, 1)})
        assert "errors" not in one
        assert known_queries(strict) == 0  # its first sight of the document
        assert "errors" not in await strict.query(LISTING, {"refs": refs_of(strict, 1)})
        assert known_queries(strict) == 1
        two = await lenient.query(LISTING, {"refs": refs_of(lenient, 2)})
        assert "errors" not in two and len(two["data"]["listings"]) == 2
        assert known_queries(lenient) == 0  # the other app's known document is not this one's
        refused = await strict.query(LISTING, {"refs": refs_of(strict, 2)})
        assert {e["extensions"]["code"] for e in refused["errors"]} == {"BAD_USER_INPUT"}
