"""A serving process tunes the garbage collector once it has started, and its requests
leave no reference cycles for it."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from graphql import FragmentDefinitionNode, OperationDefinitionNode, parse
from graphql.execution.values import VariableValues, get_variable_values

from gateway.domain.models import Caller
from gateway.graphql.compiler import collect_root_fields
from gateway.graphql.schema import build_schema
from gateway.process.garbage import THRESHOLDS, tune_for_serving
from gateway.service.listings import ListingRequest
from gateway.simulator import RunningSimulator

from gateway_harness import run_gateway


def test_serving_freezes_what_start_allocated_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    assert before != THRESHOLDS
    try:
        tune_for_serving()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


QUERY = """
query Board($refs: [ListingRef!]!) {
  listings(refs: $refs) {
    id state portals { portal provider state }
    classified { latestStatus { status date } statuses(first: 2) { nodes { id } } }
    legacy { portals { portal publish { online } } }
  }
}"""


@pytest.mark.parametrize("compiled", [True, False])
async def test_a_request_leaves_nothing_for_the_cycle_collector(
    simulator: RunningSimulator, compiled: bool
) -> None:
    # A serving process collects cycles rarely: what a request read must go when it is
    # answered, by reference counting alone, on strawberry's path (the first request of a
    # document) and on the known-document path (the second). (A failed upstream read still
    # leaves cycles: its error's traceback holds the frames that hold the error.)
    async with run_gateway(simulator, compiled_execution=compiled, legacy_cache_ttl_s=0) as gateway:
        service = gateway.app.state.graphql.service
        scopes: list[weakref.ref[ListingRequest]] = []
        make_scope = service.request

        def request(caller: Caller) -> ListingRequest:
            scope = make_scope(caller)
            scopes.append(weakref.ref(scope))
            return scope

        service.request = request
        mine = set(gateway.sim.data.tenants["agency-1"])
        refs = [
            {"classifiedId": c, "legacy": {"userId": u, "adId": a}}
            for c, u, a in gateway.sim.data.listings
            if c in mine
        ][:3]
        gc.collect()
        gc.disable()
        try:
            for _ in range(2):
                body = await gateway.query(QUERY, {"refs": refs})
                assert len(body["data"]["listings"]) == 3 and "errors" not in body
            for _ in range(100):  # the server's handler may still be returning
                if all(scope() is None for scope in scopes):
                    break
                await asyncio.sleep(0)
            assert len(scopes) == 2
            assert [scope() for scope in scopes] == [None, None]
        finally:
            gc.enable()


def test_root_fields_are_collected_without_a_reference_cycle() -> None:
    # graphql-core's path collects the root fields per request; a cycle there would keep the
    # request's variables (every ref it names) until a full collection.
    schema = build_schema()._schema
    document = parse(
        "query($refs: [ListingRef!]!, $no: Boolean!) { ...F  ... on Query { a: listings(refs:"
        ' $refs) { id } } listing(ref: {classifiedId: "c"}) @skip(if: $no) { id } }'
        " fragment F on Query { listings(refs: $refs) { state } }"
    )
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    fragments = {
        node.name.value: node
        for node in document.definitions
        if isinstance(node, FragmentDefinitionNode)
    }
    raw = {"refs": [{"classifiedId": "c1"}], "no": True}
    variables = get_variable_values(schema, operation.variable_definitions, raw)
    assert isinstance(variables, VariableValues)
    # Until nothing is left: a collection can free what frees more (the documents an earlier
    # test's app parsed, their tokens in a cycle), which the next one finds.
    while gc.collect():
        pass
    gc.disable()
    try:
        roots = collect_root_fields(schema, operation, fragments, variables)
        assert [root.key for root in roots] == ["listings", "a"]
        assert gc.collect() == 0
    finally:
        gc.enable()
