"""Status cursors are opaque: a page cut from a history read once costs no second read, and
`after:` continues after the last item handed out, whatever arrived in between."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.domain.models import Caller, ListingRef
from gateway.service.plan import ClassifiedSelection, ListingSelection, PageArgs
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

FORGED_NAIVE_KEYSET = "a3M6MjAyNC0wMS0wMVQwMDowMDowMHx4"


@pytest.fixture(params=[True, False], ids=["compiled", "graphql-core"])
async def gateway(
    simulator: RunningSimulator, request: pytest.FixtureRequest
) -> AsyncIterator[RunningGateway]:
    """The gateway with compiled execution on, and again with it off."""
    async with run_gateway(simulator, compiled_execution=request.param) as running:
        yield running


PAGE = """query($id: ID!, $after: String) { listing(ref: {classifiedId: $id}) {
  state
  classified { latestStatus { id } statuses(first: 5, after: $after) {
    nodes { id date } pageInfo { hasNextPage endCursor } } }
} }"""


def one_page_classified(gateway: RunningGateway, minimum: int = 12) -> str:
    """A classified of agency-1 whose whole history fits one V3 page but not five."""
    for classified_id in gateway.sim.data.tenants["agency-1"]:
        record = gateway.sim.state.classified(classified_id)
        if record is not None and minimum <= len(record.statuses) <= 100:
            return classified_id
    raise AssertionError("the seeded data has no such history")


async def test_state_and_a_short_page_cost_one_read_and_pages_continue_from_the_history(
    gateway: RunningGateway,
) -> None:
    classified_id = one_page_classified(gateway)
    record = gateway.sim.state.classified(classified_id)
    assert record is not None
    first = await gateway.query(PAGE, {"id": classified_id})
    assert "errors" not in first, first
    connection = first["data"]["listing"]["classified"]["statuses"]
    assert connection["pageInfo"]["hasNextPage"]
    assert gateway.calls("v3", "classified_statuses") == 1

    # A newer status arrives (and its webhook drops the cached pages) before the next page.
    await gateway.sim.state.append_status(
        classified_id,
        {"portals": ["SL"], "status": "UPDATED", "message": "newer",
         "statusDate": "2031-01-01T00:00:00.000Z"},
    )  # fmt: skip
    gateway.app.state.runtime.service.drop_classified(classified_id)
    nodes = list(connection["nodes"])
    after = connection["pageInfo"]["endCursor"]
    while after is not None:
        body = await gateway.query(PAGE, {"id": classified_id, "after": after})
        assert "errors" not in body, body
        page = body["data"]["listing"]["classified"]["statuses"]
        nodes += page["nodes"]
        after = page["pageInfo"]["endCursor"]
    assert len(nodes) == len(record.statuses) - 1  # everything that was there, once
    assert len({node["id"] for node in nodes}) == len(nodes)
    assert [n["date"] for n in nodes] == sorted((n["date"] for n in nodes), reverse=True)
    # One read of the grown history served every later page: it was cached after the first.
    assert gateway.calls("v3", "classified_statuses") == 2


async def test_a_page_alone_continues_with_the_wrapped_upstream_token(
    gateway: RunningGateway,
) -> None:
    classified_id = one_page_classified(gateway)
    query = """query($id: ID!, $after: String) { listing(ref: {classifiedId: $id}) { classified {
        statuses(first: 5, after: $after) { nodes { id } pageInfo { endCursor } } } } }"""
    body = await gateway.query(query, {"id": classified_id})
    cursor = body["data"]["listing"]["classified"]["statuses"]["pageInfo"]["endCursor"]
    await gateway.query(query, {"id": classified_id, "after": cursor})
    tokens = [
        dict(r.query).get("nextToken")
        for r in gateway.sim.state.requests
        if r.endpoint == "classified_statuses"
    ]
    assert tokens[0] is None and tokens[1] and tokens[1] != cursor  # unwrapped for V3


async def test_a_bad_cursor_is_bad_user_input_before_any_upstream_call(
    gateway: RunningGateway,
) -> None:
    classified_id = one_page_classified(gateway)
    # The last one decodes to "ks:2024-01-01T00:00:00|x", a keyset date without UTC offset.
    for bad in ("garbage!", "e:abc", "dGhpcyBpcyBub3QgYSBjdXJzb3I", FORGED_NAIVE_KEYSET):
        body = await gateway.query(PAGE, {"id": classified_id, "after": bad})
        assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}, body
    assert gateway.calls("v3") == 0 and gateway.calls("token") == 0


async def test_the_service_plans_reads_from_a_domain_selection(gateway: RunningGateway) -> None:
    """What an edge asks in domain terms: state, the latest status and three pages, one read."""
    classified_id = one_page_classified(gateway)
    pages = (PageArgs.of(5), PageArgs.of(3, statuses=["CREATED"]), PageArgs.of(100))
    selection = ListingSelection(
        unified=True, classified=ClassifiedSelection(latest=True, pages=pages)
    )
    scope = gateway.app.state.runtime.service.request(Caller())
    [data] = await scope.listings([ListingRef(classified_id=classified_id)], selection)
    assert data.classified is not None
    everything = data.classified.page(pages[2])
    assert data.classified.page(pages[0]).items == everything.items[:5]
    assert data.classified.latest == everything.items[0]
    assert all(i.raw_status == "CREATED" for i in data.classified.page(pages[1]).items)
    assert data.state is not None
    assert gateway.calls("v3", "classified_statuses") == 1
