"""Status connections page through the upstream with its own tokens, to the end."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.service import histories
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

STATUSES = """query($id: ID!, $first: Int, $after: String, $status: [ClassifiedStatusCode!], $portal: [Portal!]) {
  listing(ref: {classifiedId: $id}) { classified {
    statuses(first: $first, after: $after, status: $status, portal: $portal) {
      nodes { id status date portals }
      edges { cursor node { id } }
      pageInfo { hasNextPage endCursor hasPreviousPage startCursor }
    }
  } }
}"""


async def read_all(
    gateway: RunningGateway, classified_id: str, first: int, **filters: object
) -> list[dict]:
    tenant = {"x-intermediary-id": gateway.sim.data.tenant_of(classified_id)}
    nodes: list[dict] = []
    after = None
    for _ in range(100):
        body = await gateway.query(
            STATUSES,
            {"id": classified_id, "first": first, "after": after, **filters},
            headers=tenant,
        )
        assert "errors" not in body, body
        connection = body["data"]["listing"]["classified"]["statuses"]
        assert len(connection["nodes"]) <= first
        assert [edge["node"]["id"] for edge in connection["edges"]] == [
            n["id"] for n in connection["nodes"]
        ]
        # Relay's PageInfo, forward paging: a page after a cursor has a previous page, and
        # starts at its first edge and ends at its last, the last page too.
        edges = connection["edges"]
        assert connection["pageInfo"]["hasPreviousPage"] is (after is not None)
        assert connection["pageInfo"]["startCursor"] == (edges[0]["cursor"] if edges else None)
        assert connection["pageInfo"]["endCursor"] == (edges[-1]["cursor"] if edges else None)
        nodes += connection["nodes"]
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes
        after = connection["pageInfo"]["endCursor"]
    raise AssertionError("pagination did not end")


async def test_pages_to_the_end_without_gaps_or_duplicates(gateway: RunningGateway) -> None:
    classified_id = gateway.sim.data.multi_page[0]
    record = gateway.sim.state.classified(classified_id)
    assert record is not None
    nodes = await read_all(gateway, classified_id, first=100)
    assert len(nodes) == len(record.statuses) > 100
    assert len({node["id"] for node in nodes}) == len(nodes)
    dates = [node["date"] for node in nodes]
    assert dates == sorted(dates, reverse=True)
    # The endCursor went upstream untouched as nextToken.
    tokens = [
        dict(r.query).get("nextToken")
        for r in gateway.sim.state.requests
        if r.endpoint == "classified_statuses"
    ]
    assert tokens[0] is None and all(tokens[1:])


async def test_small_pages_and_filters_map_to_upstream_parameters(gateway: RunningGateway) -> None:
    classified_id = gateway.sim.data.multi_page[0]
    everything = await read_all(gateway, classified_id, first=100)
    created = await read_all(
        gateway, classified_id, first=7, status=["CREATED", "UPDATED"], portal=["SL"]
    )
    expected = [
        n for n in everything if n["status"] in {"CREATED", "UPDATED"} and "SL" in n["portals"]
    ]
    assert [n["id"] for n in created] == [n["id"] for n in expected]
    filtered = [r.query for r in gateway.sim.state.requests if ("limit", "7") in r.query]
    assert filtered and all(
        ("status", "CREATED") in q and ("status", "UPDATED") in q and ("portal", "SL") in q
        for q in filtered
    )


async def test_a_legacy_portal_in_a_status_filter_keeps_nothing_however_the_page_is_read(
    gateway: RunningGateway,
) -> None:
    """V3 knows no legacy portal (it refuses the code): a filter that names only legacy
    portals answers an empty page without a call, as a page cut from a history read does;
    beside V3 portals, only those are sent."""
    classified_id = gateway.sim.data.multi_page[0]
    tenant = {"x-intermediary-id": gateway.sim.data.tenant_of(classified_id)}
    alone = """query($id: ID!, $portal: [Portal!]) { listing(ref: {classifiedId: $id}) {
      classified { statuses(first: 5, portal: $portal) {
        nodes { id portals } pageInfo { hasNextPage endCursor } } } } }"""
    with_state = alone.replace("classified { statuses", "state classified { statuses")
    answers, reads = [], []
    for query in (alone, with_state):
        gateway.sim.state.reset_counters()
        body = await gateway.query(
            query, {"id": classified_id, "portal": ["MARKTPLAATS", "WEBSITE"]}, headers=tenant
        )
        assert "errors" not in body, body
        answers.append(body["data"]["listing"]["classified"]["statuses"])
        reads.append(gateway.calls("v3", "classified_statuses"))
    assert answers == [{"nodes": [], "pageInfo": {"hasNextPage": False, "endCursor": None}}] * 2
    assert reads[0] == 0 and reads[1] >= 1  # the second read the state's history
    mixed = await gateway.query(
        alone, {"id": classified_id, "portal": ["SL", "MARKTPLAATS"]}, headers=tenant
    )
    nodes = mixed["data"]["listing"]["classified"]["statuses"]["nodes"]
    assert nodes and all("SL" in node["portals"] for node in nodes)
    [sent] = [r.query for r in gateway.sim.state.requests if ("limit", "5") in r.query]
    assert [value for name, value in sent if name == "portal"] == ["SL"]


async def test_every_edge_cursor_pages_on_from_its_status(gateway: RunningGateway) -> None:
    classified_id = gateway.sim.data.multi_page[0]
    tenant = {"x-intermediary-id": gateway.sim.data.tenant_of(classified_id)}
    body = await gateway.query(STATUSES, {"id": classified_id, "first": 5}, headers=tenant)
    connection = body["data"]["listing"]["classified"]["statuses"]
    cursors = [edge["cursor"] for edge in connection["edges"]]
    ids = [node["id"] for node in connection["nodes"]]
    assert len(set(cursors)) == 5
    # The last edge's cursor is the endCursor: V3's next page, one call away.
    assert connection["pageInfo"]["endCursor"] == cursors[-1]
    for index in (0, 2):
        after = await gateway.query(
            STATUSES, {"id": classified_id, "first": 2, "after": cursors[index]}, headers=tenant
        )
        assert "errors" not in after, after
        page = after["data"]["listing"]["classified"]["statuses"]
        assert [node["id"] for node in page["nodes"]] == ids[index + 1 : index + 3]
        assert page["pageInfo"]["hasPreviousPage"] is True


async def test_media_statuses_page_and_latest(gateway: RunningGateway) -> None:
    classified_id, media_id = next(
        (cid, media[0])
        for cid in gateway.sim.data.tenants["agency-1"]
        if (media := gateway.sim.data.media_of(cid))
    )
    query = """query($id: ID!, $media: ID!, $after: String) { listing(ref: {classifiedId: $id}) { classified {
        media(mediaId: $media) { id latestStatus { status date actionRequired }
          statuses(first: 1, after: $after) { nodes { id status date } pageInfo { hasNextPage endCursor } } }
    } } }"""
    seen: list[dict] = []
    after = None
    latest = None
    for _ in range(50):
        body = await gateway.query(query, {"id": classified_id, "media": media_id, "after": after})
        assert "errors" not in body, body
        media = body["data"]["listing"]["classified"]["media"]
        latest = media["latestStatus"]
        seen += media["statuses"]["nodes"]
        if not media["statuses"]["pageInfo"]["hasNextPage"]:
            break
        after = media["statuses"]["pageInfo"]["endCursor"]
    record = gateway.sim.state.classified(classified_id)
    assert record is not None
    assert len(seen) == len(record.media[media_id])
    assert latest is not None and latest["date"] == max(node["date"] for node in seen)


LATEST_AND_PAGE = """query($id: ID!) { listing(ref: {classifiedId: $id}) { classified {
  latestStatus { status date }
  statuses(first: 2) { nodes { status } }
} } }"""


async def test_a_history_cut_at_its_page_cap_takes_the_latest_status_from_v3(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """V3 promises no order, so the pages read before a history's cap may lack its newest
    status: `latestStatus` then comes from V3's latest filter, not from those pages."""
    dates = [f"2024-03-0{day}T10:00:00.000Z" for day in range(1, 7)]
    items = [  # oldest first, two to a page
        {"portals": ["SL"], "status": status, "message": "m", "statusDate": date}
        for status, date in zip(
            ["RECEIVED", "CREATED", "UPDATING", "UPDATED", "UPDATING", "DELETED"],
            dates,
            strict=True,
        )
    ]
    asked: list[dict[str, str]] = []

    async def statuses(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if request.query.get("filter") == "latest":
            return web.json_response({"items": [items[-1]]})
        start = int(request.query.get("nextToken", "0"))
        body: dict[str, object] = {"items": items[start : start + 2]}
        if start + 2 < len(items):
            body["nextToken"] = str(start + 2)
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/v3/classifieds/{classifiedId}/statuses", statuses)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setattr(histories, "MAX_HISTORY_PAGES", 2)
    try:
        async with run_gateway(simulator, v3_url=str(server.make_url("/v3"))) as gw:
            body = await gw.query(LATEST_AND_PAGE, {"id": "c-long"})
    finally:
        await server.close()
    assert "errors" not in body, body
    classified = body["data"]["listing"]["classified"]
    assert classified["latestStatus"] == {"status": "DELETED", "date": "2024-03-06T10:00:00+00:00"}
    # The two pages the cap allows, then V3's latest; the first page is still cut from
    # what was read (the newest two of it).
    assert [query.get("nextToken") for query in asked if "filter" not in query] == [None, "2"]
    assert [query for query in asked if "filter" in query] == [{"filter": "latest"}]
    assert [node["status"] for node in classified["statuses"]["nodes"]] == ["UPDATED", "UPDATING"]
