"""V3 pages are cached per tenant, single-flighted, and a listing costs as few reads as it can."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

STATE_QUERY = (
    "query($id: ID!) { listing(ref: {classifiedId: $id}) { state portals { portal state } } }"
)


def short_history_classified(gateway: RunningGateway, tenant: str = "agency-1") -> str:
    """A classified of `tenant` whose whole history fits one default page of 20."""
    for classified_id in gateway.sim.data.tenants[tenant]:
        record = gateway.sim.state.classified(classified_id)
        if record is not None and 3 <= len(record.statuses) <= 20:
            return classified_id
    raise AssertionError("the seeded data has no short history")


def v3_queries(gateway: RunningGateway) -> list[list[tuple[str, str]]]:
    return [r.query for r in gateway.sim.state.requests if r.endpoint == "classified_statuses"]


async def test_same_query_twice_costs_one_read_per_page(gateway: RunningGateway) -> None:
    classified_id = gateway.sim.data.multi_page[0]
    tenant = {"x-intermediary-id": gateway.sim.data.tenant_of(classified_id)}
    first = await gateway.query(STATE_QUERY, {"id": classified_id}, headers=tenant)
    pages = gateway.calls("v3", "classified_statuses")
    assert pages >= 2, "a multi-page history reads every page"
    second = await gateway.query(STATE_QUERY, {"id": classified_id}, headers=tenant)
    assert second == first
    assert gateway.calls("v3", "classified_statuses") == pages
    assert all(("limit", "100") in query for query in v3_queries(gateway))


async def test_fifty_concurrent_identical_queries_make_one_upstream_call(
    gateway: RunningGateway,
) -> None:
    classified_id = short_history_classified(gateway)
    bodies = await asyncio.gather(
        *(gateway.query(STATE_QUERY, {"id": classified_id}) for _ in range(50))
    )
    assert all("errors" not in body for body in bodies)
    assert len({str(body) for body in bodies}) == 1
    assert gateway.calls("v3", "classified_statuses") == 1
    assert gateway.calls("token") == 1


async def test_one_listing_whose_history_fits_a_page_costs_one_read(
    gateway: RunningGateway,
) -> None:
    classified_id = short_history_classified(gateway)
    body = await gateway.query(
        """query($id: ID!) { listing(ref: {classifiedId: $id}) {
             state portals { portal }
             classified { latestStatus { id status date } statuses { nodes { id } pageInfo { hasNextPage endCursor } } }
        } }""",
        {"id": classified_id},
    )
    assert "errors" not in body, body
    classified = body["data"]["listing"]["classified"]
    # The last page's endCursor is its last edge's cursor (Relay), with no page after it.
    assert classified["statuses"]["pageInfo"]["hasNextPage"] is False
    assert classified["statuses"]["pageInfo"]["endCursor"] is not None
    assert classified["latestStatus"]["id"] == classified["statuses"]["nodes"][0]["id"]
    assert gateway.calls("v3", "classified_statuses") == 1


async def test_latest_status_alone_asks_v3_for_the_latest(gateway: RunningGateway) -> None:
    classified_id = short_history_classified(gateway)
    body = await gateway.query(
        "query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { latestStatus { date } } } }",
        {"id": classified_id},
    )
    record = gateway.sim.state.classified(classified_id)
    assert record is not None
    newest = max(item.item["statusDate"] for item in record.statuses)
    assert body["data"]["listing"]["classified"]["latestStatus"]["date"].startswith(newest[:19])
    [query] = v3_queries(gateway)
    assert ("filter", "latest") in query


async def test_passthrough_tenants_never_share_a_cached_page(simulator: RunningSimulator) -> None:
    state = simulator.sim.state
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    own = {"authorization": f"Bearer {state.issue_token('agency-1')}"}
    other = {"authorization": f"Bearer {state.issue_token('agency-2')}"}
    async with run_gateway(simulator, v3_auth="passthrough") as gateway:
        mine = await gateway.query(STATE_QUERY, {"id": classified_id}, headers=own)
        assert "errors" not in mine
        calls = gateway.calls("v3", "classified_statuses")
        theirs = await gateway.query(STATE_QUERY, {"id": classified_id}, headers=other)
        assert gateway.calls("v3", "classified_statuses") > calls  # not served from cache
        assert theirs["data"]["listing"]["state"] is None
        codes = {error["extensions"]["code"] for error in theirs["errors"]}
        assert codes == {"UPSTREAM_REJECTED"}
        sent = [r.headers.get("Authorization") for r in state.requests if r.upstream == "v3"]
        assert set(sent) == {own["authorization"], other["authorization"]}


async def test_passthrough_without_a_token_is_unauthenticated(simulator: RunningSimulator) -> None:
    classified_id = simulator.sim.data.tenants["agency-1"][1]
    async with run_gateway(simulator, v3_auth="passthrough") as gateway:
        body = await gateway.query(STATE_QUERY, {"id": classified_id})
    assert {e["extensions"]["code"] for e in body["errors"]} == {"UNAUTHENTICATED"}
    assert gateway.calls("v3") == 0


async def test_oauth_agencies_are_separate_tenants(gateway: RunningGateway) -> None:
    classified_id = gateway.sim.data.tenants["agency-1"][1]
    ok = await gateway.query(STATE_QUERY, {"id": classified_id})
    assert "errors" not in ok
    refused: dict[str, Any] = await gateway.query(
        STATE_QUERY, {"id": classified_id}, headers={"x-intermediary-id": "agency-2"}
    )
    assert {e["extensions"]["code"] for e in refused["errors"]} == {"UPSTREAM_REJECTED"}
    assert gateway.calls("token") == 2  # one token per agency


async def test_failures_are_not_cached(gateway: RunningGateway) -> None:
    classified_id = short_history_classified(gateway)
    gateway.sim.state.add_fault(
        "v3", "error", status=500, count=3
    )  # the first try and both retries
    failed = await gateway.query(STATE_QUERY, {"id": classified_id})
    assert {e["extensions"]["code"] for e in failed["errors"]} == {"UPSTREAM_UNAVAILABLE"}
    healed = await gateway.query(STATE_QUERY, {"id": classified_id})
    assert "errors" not in healed


async def test_latest_status_and_a_page_together_cost_one_read(gateway: RunningGateway) -> None:
    classified_id = short_history_classified(gateway)
    body = await gateway.query(
        """query($id: ID!) { listing(ref: {classifiedId: $id}) { classified {
             latestStatus { id }
             recent: statuses(first: 20) { nodes { id } pageInfo { hasNextPage } }
             created: statuses(status: [CREATED]) { nodes { id status } }
        } } }""",
        {"id": classified_id},
    )
    assert "errors" not in body, body
    classified = body["data"]["listing"]["classified"]
    assert classified["latestStatus"]["id"] == classified["recent"]["nodes"][0]["id"]
    assert all(node["status"] == "CREATED" for node in classified["created"]["nodes"])
    [query] = v3_queries(gateway)
    assert ("limit", "100") in query and ("filter", "latest") not in query


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "graphql-core"])
async def test_root_fields_asking_one_listing_together_cost_one_read(
    simulator: RunningSimulator, compiled: bool
) -> None:
    """A listing whose history fits one page costs one V3 read whatever the query asks of
    it, across root fields too, whichever of them comes first."""
    async with run_gateway(simulator, compiled_execution=compiled) as gateway:
        await _root_fields_asking_one_listing(gateway)


async def _root_fields_asking_one_listing(gateway: RunningGateway) -> None:
    latest = "classified { latestStatus { id } }"
    page = "classified { statuses { nodes { id } } }"
    shapes = [(latest, page), (page, latest), ("state", latest), (latest, "state")]
    short = [
        classified_id
        for classified_id in gateway.sim.data.tenants["agency-1"]
        if 3 <= len(getattr(gateway.sim.state.classified(classified_id), "statuses", ())) <= 20
    ]
    assert len(short) >= len(shapes)
    answers = []
    for classified_id, (a, b) in zip(short, shapes, strict=False):
        gateway.sim.state.reset_counters()
        body = await gateway.query(
            f"""query($id: ID!) {{ a: listing(ref: {{classifiedId: $id}}) {{ {a} }}
                b: listings(refs: [{{classifiedId: $id}}]) {{ {b} }} }}""",
            {"id": classified_id},
        )
        assert "errors" not in body, body
        assert gateway.calls("v3", "classified_statuses") == 1, (a, b, v3_queries(gateway))
        answers.append((body["data"]["a"], body["data"]["b"][0]))
    # The latest status is the newest of the page, whichever root field asked which.
    for latest_of, page_of in (answers[0], answers[1][::-1]):
        newest = page_of["classified"]["statuses"]["nodes"][0]["id"]
        assert latest_of["classified"]["latestStatus"]["id"] == newest


async def test_a_page_alone_asks_for_just_that_page(gateway: RunningGateway) -> None:
    classified_id = short_history_classified(gateway)
    body = await gateway.query(
        "query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { statuses(first: 3) { nodes { id } } } } }",
        {"id": classified_id},
    )
    assert len(body["data"]["listing"]["classified"]["statuses"]["nodes"]) == 3
    [query] = v3_queries(gateway)
    assert ("limit", "3") in query


async def test_pages_cut_from_the_history_match_what_v3_answers(gateway: RunningGateway) -> None:
    """A filtered page derived from the history equals the one V3 itself filters."""
    classified_id = short_history_classified(gateway)
    selection = (
        "statuses(status: [CREATED, UPDATED, RECEIVED], portal: [SL, LI]) { nodes { id date } }"
    )
    derived = await gateway.query(
        f"query($id: ID!) {{ listing(ref: {{classifiedId: $id}}) {{ state classified {{ {selection} }} }} }}",
        {"id": classified_id},
    )
    direct = await gateway.query(
        f"query($id: ID!) {{ listing(ref: {{classifiedId: $id}}) {{ classified {{ {selection} }} }} }}",
        {"id": classified_id},
    )
    assert gateway.calls("v3", "classified_statuses") == 2  # the history, then the filtered page
    pages = [body["data"]["listing"]["classified"]["statuses"] for body in (derived, direct)]
    assert pages[0]["nodes"]
    assert pages[0] == pages[1]


async def test_a_media_latest_status_and_page_together_cost_one_read(
    gateway: RunningGateway,
) -> None:
    classified_id, media_id = next(
        (cid, media[0])
        for cid in gateway.sim.data.tenants["agency-1"]
        if (media := gateway.sim.data.media_of(cid))
    )
    body = await gateway.query(
        """query($id: ID!, $media: ID!) { listing(ref: {classifiedId: $id}) { classified {
             media(mediaId: $media) { statuses { nodes { id } } latestStatus { id } }
        } } }""",
        {"id": classified_id, "media": media_id},
    )
    assert "errors" not in body, body
    media = body["data"]["listing"]["classified"]["media"]
    assert media["latestStatus"]["id"] == media["statuses"]["nodes"][0]["id"]
    reads = [r.query for r in gateway.sim.state.requests if r.endpoint == "media_statuses"]
    assert reads == [[("limit", "100")]]


async def test_drop_classified_rereads_that_classified_only(gateway: RunningGateway) -> None:
    first, second = gateway.sim.data.tenants["agency-1"][1:3]
    for classified_id in (first, second):
        assert "errors" not in await gateway.query(STATE_QUERY, {"id": classified_id})
    reads = gateway.calls("v3", "classified_statuses")
    service = gateway.app.state.runtime.service
    assert service.drop_classified(first) >= 1
    assert service.drop_classified(first) == 0
    for classified_id in (first, second):
        assert "errors" not in await gateway.query(STATE_QUERY, {"id": classified_id})
    paths = [r.path for r in gateway.sim.state.requests if r.endpoint == "classified_statuses"]
    assert paths[reads:] and all(first in path for path in paths[reads:])
