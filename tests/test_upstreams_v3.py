"""The Classifieds V3 client: wire requests (query, path encoding, headers), paging, parsing
per docs/upstreams.md, failure kinds and retries, webhooks. Against the simulator, plus a small
loopback app where the simulator cannot produce the case (odd tokens, odd payloads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.errors import (
    InvalidInput,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.domain.models import Caller, ClassifiedStatusCode, MediaStatusCode, Portal
from gateway.simulator import SIM_AUDIENCE, SIM_CLIENT_ID, SIM_CLIENT_SECRET, RunningSimulator
from gateway.upstreams import (
    UNKNOWN_VALUES,
    ClassifiedsV3Client,
    OAuthCredentials,
    RetryPolicy,
    StaticCredentials,
    create_session,
)
from gateway.upstreams.trace import child_traceparent, parse_traceparent
from gateway.upstreams.wire import Pool

from gateway_harness import NO_PAUSE

USER_AGENT = "TestGateway/1.0.0 aiohttp/3 linux/6"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_TRACE = f"00-{TRACE_ID}-b9c7c989f97918e1-01"
TENANT = "agency-1"
# The vendor's example token (docs/upstreams.md), plus one full of characters a URL would mangle.
VENDOR_TOKEN = (
    "eyJzdGF0dXNEYXRlIjoiMjAyMC0wNy0yOVQxMjozMTowNy24MjRaIiwic3RhdHVzSWQiOiIwZWZjMWRhZC1lODg4LTRl"
    "MDEtODcxZi0zYTgyNDQxM2EzYjEiLCJjbGFzc2lmaWVkSWQiOiIwNGRkOWYxZS0zYTY2LTQ4MDQtYjFjMy03NTY2NmJi"
    "MjhhYWEifQ=="
)
ODD_TOKEN = "a+b/c==d%2Fe&f=g;h ij#k?l+/=é"


@pytest.fixture
async def session() -> AsyncIterator[Pool]:
    async with create_session(timeout_s=10) as s:
        yield s


@pytest.fixture
def v3(simulator: RunningSimulator, session: Pool) -> ClassifiedsV3Client:
    credentials = OAuthCredentials(
        session,
        token_url=simulator.token_url,
        client_id=SIM_CLIENT_ID,
        client_secret=SIM_CLIENT_SECRET,
        audience=SIM_AUDIENCE,
        default_intermediary_id=TENANT,
        user_agent=USER_AGENT,
        timeout_s=5,
    )
    # A generous deadline: on a busy machine the token and the call share it.
    return ClassifiedsV3Client(
        session, simulator.v3_url, credentials, USER_AGENT, 5.0, retry_policy=NO_PAUSE
    )


async def short_deadline(
    simulator: RunningSimulator, session: Pool, v3: ClassifiedsV3Client
) -> ClassifiedsV3Client:
    """`v3`'s credentials, a token already fetched, and a deadline of one second."""
    await v3.credentials.authorization(Caller())
    return ClassifiedsV3Client(
        session, simulator.v3_url, v3.credentials, USER_AGENT, 1.0, retry_policy=NO_PAUSE
    )


def v3_requests(simulator: RunningSimulator, endpoint: str | None = None) -> list[Any]:
    return [
        r
        for r in simulator.sim.state.requests
        if r.upstream == "v3" and endpoint in (None, r.endpoint)
    ]


def put(
    simulator: RunningSimulator, items: list[dict[str, Any]], **media: list[dict[str, Any]]
) -> str:
    classified_id = "c-" + str(len(simulator.sim.state.requests)) + "-" + str(time.monotonic_ns())
    simulator.sim.state.put_classified(
        classified_id, tenant=TENANT, items=items, media=media or None
    )
    return classified_id


def item(
    status: str = "CREATED", date: str = "2024-03-01T10:00:00.000Z", **extra: Any
) -> dict[str, Any]:
    return {
        "portals": ["SL"],
        "status": status,
        "message": f"{status} message",
        "statusDate": date,
        **extra,
    }


# --- a loopback app for payloads the simulator does not produce --------------------------


class Canned:
    """Answers every request with the next body of `bodies`; records raw paths and queries."""

    def __init__(self, server: TestServer, bodies: list[Any]) -> None:
        self.server = server
        self.bodies = bodies
        self.raw_paths: list[str] = []
        self.queries: list[list[tuple[str, str]]] = []


@pytest.fixture
async def canned(
    session: Pool,
) -> AsyncIterator[Callable[[list[Any]], Awaitable[ClassifiedsV3Client]]]:
    servers: list[TestServer] = []
    self_ref: dict[str, Canned] = {}

    async def start(bodies: list[Any]) -> ClassifiedsV3Client:
        async def handler(request: web.Request) -> web.StreamResponse:
            state = self_ref["canned"]
            state.raw_paths.append(request.raw_path)
            state.queries.append(list(request.query.items()))
            body = state.bodies.pop(0) if len(state.bodies) > 1 else state.bodies[0]
            return web.json_response(body)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        self_ref["canned"] = Canned(server, bodies)
        return ClassifiedsV3Client(
            session, str(server.make_url("/caas/v3")), StaticCredentials("t0k"), USER_AGENT, 1.0
        )

    start.state = self_ref  # type: ignore[attr-defined]
    yield start
    for server in servers:
        await server.close()


# --- headers ------------------------------------------------------------------------------


async def test_every_call_carries_user_agent_bearer_and_continued_trace(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    caller = Caller(traceparent=CALLER_TRACE)
    classified_id = simulator.sim.data.tenants[TENANT][1]
    await v3.classified_statuses(caller, classified_id)
    record = simulator.sim.state.classified(classified_id)
    assert record is not None
    media_id = next(iter(record.media), None)
    if media_id is not None:
        await v3.media_statuses(caller, classified_id, media_id)
    await v3.subscribe_webhook(caller, "https://hooks.example.com/gw")
    await v3.unsubscribe_webhook(caller)
    requests = v3_requests(simulator)
    assert len(requests) == (4 if media_id is not None else 3)
    spans = set()
    for request in requests:
        assert request.headers["User-Agent"] == USER_AGENT
        assert request.headers["Authorization"].startswith("Bearer ")
        version, trace_id, span, flags = request.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert span != "b9c7c989f97918e1"
        spans.add(span)
    assert len(spans) == len(requests), "a fresh parent id per call"


@pytest.mark.parametrize(
    "incoming",
    [
        None,
        "",
        "garbage",
        f"00-{TRACE_ID.upper()}-b9c7c989f97918e1-01",  # upper-case hex is invalid
        f"00-{'0' * 32}-b9c7c989f97918e1-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-b9c7c989f97918e1-01",
        f"00-{TRACE_ID}-b9c7c989f97918e1-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID}-b9c7c989f97918e-01",
    ],
)
async def test_invalid_or_missing_traceparent_starts_a_new_trace(
    simulator: RunningSimulator, v3: ClassifiedsV3Client, incoming: str | None
) -> None:
    await v3.classified_statuses(
        Caller(traceparent=incoming), simulator.sim.data.tenants[TENANT][1]
    )
    sent = v3_requests(simulator)[0].headers["traceparent"]
    parsed = parse_traceparent(sent)
    assert parsed is not None, "what we send is valid"
    assert parsed[0] != TRACE_ID.lower()


def test_traceparent_rules() -> None:
    child = child_traceparent(CALLER_TRACE)
    assert child.startswith(f"00-{TRACE_ID}-") and child.endswith("-01") and len(child) == 55
    assert child_traceparent(f"00-{TRACE_ID}-b9c7c989f97918e1-00").endswith("-00"), "flags kept"
    # A later version is understood by its first four fields and answered as version 00.
    future = child_traceparent(f"01-{TRACE_ID}-b9c7c989f97918e1-01-what-ever")
    assert future.startswith(f"00-{TRACE_ID}-")
    assert child_traceparent(None) != child_traceparent(None)


# --- query parameters and path encoding ----------------------------------------------------


async def test_query_parameters_arrive_as_documented(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    classified_id = simulator.sim.data.tenants[TENANT][1]
    await v3.classified_statuses(
        Caller(),
        classified_id,
        latest=True,
        current=True,
        statuses=[ClassifiedStatusCode.CREATED, "UPDATED"],
        portals=[Portal.SL, "LI"],
        limit=7,
    )
    (request,) = v3_requests(simulator)
    assert request.query == [
        ("filter", "latest"),
        ("current", "true"),
        ("status", "CREATED"),
        ("status", "UPDATED"),
        ("portal", "SL"),
        ("portal", "LI"),
        ("limit", "7"),
    ]
    assert request.path == f"/v3/classifieds/{classified_id}/statuses"


async def test_no_parameters_means_an_empty_query(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1], next_token="")
    assert v3_requests(simulator)[0].query == []


async def test_latest_returns_the_newest_item(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    classified_id = put(
        simulator,
        [
            item("CREATED", "2024-03-01T10:00:00.000Z"),
            item("UPDATED", "2024-03-03T10:00:00.000Z"),
            item("UPDATING", "2024-03-02T10:00:00.000Z"),
        ],
    )
    page = await v3.classified_statuses(Caller(), classified_id, latest=True)
    assert [i.status for i in page.items] == [ClassifiedStatusCode.UPDATED]


@pytest.mark.parametrize(
    "classified_id", ["../webhooks", "a/b", "%2e%2e", "?x=1", "#", "..", ".", "a b", "é"]
)
async def test_ids_are_one_encoded_path_segment(
    simulator: RunningSimulator, v3: ClassifiedsV3Client, classified_id: str
) -> None:
    with pytest.raises(UpstreamNotFound):
        await v3.classified_statuses(Caller(), classified_id)
    with pytest.raises(UpstreamNotFound):
        await v3.media_statuses(Caller(), classified_id, classified_id)
    listing, media = v3_requests(simulator)
    encoded = (
        quote(classified_id, safe="").replace(".", "%2E")
        if set(classified_id) == {"."}
        else quote(classified_id, safe="")
    )
    assert listing.endpoint == "classified_statuses"
    assert listing.path == f"/v3/classifieds/{encoded}/statuses"
    assert listing.query == []
    assert media.endpoint == "media_statuses"
    assert media.path == f"/v3/classifieds/{encoded}/media/{encoded}/statuses"
    assert simulator.sim.state.calls("v3", "webhooks_put") == 0


async def test_classified_with_a_slash_in_its_id_is_reachable(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    simulator.sim.state.put_classified("a/b?c", tenant=TENANT, items=[item()])
    page = await v3.classified_statuses(Caller(), "a/b?c")
    assert len(page.items) == 1


@pytest.mark.parametrize("bad", ["", None, 5])
async def test_empty_ids_are_invalid_input_before_any_call(
    simulator: RunningSimulator, v3: ClassifiedsV3Client, bad: Any
) -> None:
    with pytest.raises(InvalidInput):
        await v3.classified_statuses(Caller(), bad)
    with pytest.raises(InvalidInput):
        await v3.media_statuses(Caller(), "c", bad)
    assert simulator.sim.state.calls("v3") == 0
    assert simulator.sim.state.calls("token") == 0


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "10"])
async def test_bad_limit_is_invalid_input(
    simulator: RunningSimulator, v3: ClassifiedsV3Client, limit: Any
) -> None:
    with pytest.raises(InvalidInput):
        await v3.classified_statuses(Caller(), "c", limit=limit)
    with pytest.raises(InvalidInput):
        await v3.media_statuses(Caller(), "c", "m", limit=limit)
    assert simulator.sim.state.calls("v3") == 0


async def test_a_lone_string_is_not_split_into_filters(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    with pytest.raises(InvalidInput):
        await v3.classified_statuses(Caller(), "c", statuses="CREATED")  # type: ignore[arg-type]
    assert simulator.sim.state.calls("v3") == 0


@pytest.mark.parametrize("token", [VENDOR_TOKEN, ODD_TOKEN])
async def test_next_token_reaches_the_upstream_byte_for_byte(canned: Any, token: str) -> None:
    client = await canned([{"items": [], "nextToken": token}])
    page = await client.classified_statuses(Caller(), "c1", next_token=token, limit=5)
    assert page.next_token == token, "the token we read is the token we hand back"
    await client.media_statuses(Caller(), "c1", "m1", next_token=page.next_token)
    state = canned.state["canned"]
    assert state.queries[0] == [("limit", "5"), ("nextToken", token)]
    assert state.queries[1] == [("nextToken", token)]
    raw_query = state.raw_paths[0].split("?", 1)[1]
    assert "+" not in raw_query and "/" not in raw_query, "reserved bytes travel percent-encoded"


@pytest.mark.parametrize("absent", [{}, {"nextToken": ""}, {"nextToken": None}])
async def test_absent_or_empty_next_token_ends_paging(canned: Any, absent: dict[str, Any]) -> None:
    client = await canned([{"items": [item()], **absent}])
    assert (await client.classified_statuses(Caller(), "c")).next_token is None


async def test_paging_to_the_end(simulator: RunningSimulator, v3: ClassifiedsV3Client) -> None:
    classified_id = simulator.sim.data.tenants[TENANT][0]  # a long history
    record = simulator.sim.state.classified(classified_id)
    assert record is not None and len(record.statuses) > 100
    seen: list[datetime] = []
    tokens: list[str | None] = [None]
    while True:
        page = await v3.classified_statuses(
            Caller(), classified_id, limit=100, next_token=tokens[-1]
        )
        seen.extend(i.status_date for i in page.items)
        if page.next_token is None:
            break
        tokens.append(page.next_token)
    assert len(seen) == len(record.statuses)
    requests = v3_requests(simulator)
    assert len(requests) == len(tokens) >= 2
    for request, token in zip(requests, tokens, strict=True):
        assert dict(request.query).get("nextToken") == token
        assert dict(request.query)["limit"] == "100"


async def test_media_paging_to_the_end(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    media = [
        {
            "portal": "SL",
            "status": "RECEIVED",
            "message": "m",
            "statusDate": f"2024-01-01T00:00:{s:02d}Z",
        }
        for s in range(7)
    ]
    classified_id = put(simulator, [item()], m1=media)
    token = None
    count = 0
    pages = 0
    while True:
        page = await v3.media_statuses(Caller(), classified_id, "m1", limit=3, next_token=token)
        count += len(page.items)
        pages += 1
        token = page.next_token
        if token is None:
            break
    assert (count, pages) == (7, 3)


# --- parsing (docs/upstreams.md) ------------------------------------------------------------


async def test_documented_example_parses(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    classified_id = put(
        simulator,
        [
            {"portals": ["SL", "LI"], "status": "RECEIVED", "subStatus": "RECEIVED_POST",
             "message": "Classified creation passed on for processing", "statusDate": "2020-07-29T12:31:07.824Z"},
            {"portals": ["SL", "LI"], "status": "CREATED", "message": "Classified created",
             "statusDate": "2020-07-29T12:31:09.102Z"},
        ],
    )  # fmt: skip
    page = await v3.classified_statuses(Caller(), classified_id)
    by_status = {i.status: i for i in page.items}
    received = by_status[ClassifiedStatusCode.RECEIVED]
    assert received.portals == (Portal.SL, Portal.LI)
    assert received.sub_status == "RECEIVED_POST"
    assert received.message == "Classified creation passed on for processing"
    assert received.status_date == datetime(2020, 7, 29, 12, 31, 7, 824000, tzinfo=UTC)
    assert received.status_date.tzinfo is not None
    created = by_status[ClassifiedStatusCode.CREATED]
    assert created.sub_status is None and created.unknown_portals == ()
    assert page.next_token is None


async def test_lenient_classified_item_rules(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    before = (
        UNKNOWN_VALUES[("v3.portal", "ZZ")],
        UNKNOWN_VALUES[("v3.classified_status", "ARCHIVED")],
    )
    classified_id = put(
        simulator,
        [
            # unknown status, unknown portal, no subStatus, extra fields ignored
            {"portals": ["SL", "ZZ", "SLN", "SL"], "status": "ARCHIVED", "message": "new",
             "statusDate": "2024-01-05T00:00:00Z", "colour": "blue", "nested": {"a": 1}},
            # the vendor's typo: RECEIVED with RECEIVING_PATCH
            {"portals": ["BD"], "status": "RECEIVED", "subStatus": "RECEIVING_PATCH",
             "message": "m", "statusDate": "2024-01-04T00:00:00+02:00"},
            # RECEIVING_PATCH stays as it is with RECEIVING
            {"portals": ["BD"], "status": "RECEIVING", "subStatus": "RECEIVING_PATCH",
             "message": "m", "statusDate": "2024-01-03T00:00:00.123456789Z"},
            # no portals at all; an unknown subStatus passes through
            {"status": "UPDATING_FAILED", "subStatus": "UPDATING_FAILED_SOMETHING",
             "subStatusDetails": "details here", "message": "", "statusDate": "2024-01-02T00:00:00.5Z"},
        ],
    )  # fmt: skip
    page = await v3.classified_statuses(Caller(), classified_id)
    archived, typo, receiving, failed = sorted(
        page.items, key=lambda i: i.status_date, reverse=True
    )
    assert (archived.status, archived.raw_status) == (ClassifiedStatusCode.UNKNOWN, "ARCHIVED")
    assert not archived.known
    assert archived.portals == (Portal.SL, Portal.SLN)
    assert archived.unknown_portals == ("ZZ",)
    assert typo.sub_status == "RECEIVED_PATCH"
    assert typo.status_date == datetime(2024, 1, 3, 22, 0, tzinfo=UTC), "offsets become UTC"
    assert typo.status_date.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert receiving.sub_status == "RECEIVING_PATCH"
    assert receiving.status_date.microsecond == 123456
    assert failed.portals == () and failed.unknown_portals == ()
    assert failed.sub_status == "UPDATING_FAILED_SOMETHING"
    assert failed.sub_status_details == "details here"
    assert failed.message == ""
    after = (
        UNKNOWN_VALUES[("v3.portal", "ZZ")],
        UNKNOWN_VALUES[("v3.classified_status", "ARCHIVED")],
    )
    assert after == (before[0] + 1, before[1] + 1), "unknown values are counted"


async def test_internal_variant_fields_are_parsed(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    classified_id = put(
        simulator,
        [
            item(statusId="e91d4fb9-80d5-45bf-9839-ff02b597b12d", classifiedId="196354e0",
                 customerId="RC-368013", creationDate="2024-03-01T09:59:59.000Z", revision=3),
            item(date="2024-02-01T00:00:00Z", revision="2", customerId=12345, creationDate="yesterday"),
            item(date="2024-01-01T00:00:00Z", revision=0, statusId=""),
        ],
    )  # fmt: skip
    newest, middle, oldest = sorted(
        (await v3.classified_statuses(Caller(), classified_id)).items,
        key=lambda i: i.status_date,
        reverse=True,
    )
    assert newest.status_id == "e91d4fb9-80d5-45bf-9839-ff02b597b12d"
    assert newest.classified_id == "196354e0"
    assert newest.customer_id == "RC-368013"
    assert newest.revision == 3
    # creationDate is read by neither edge: cached items do not keep it.
    assert not hasattr(newest, "creation_date") and not hasattr(newest, "__dict__")
    assert (middle.revision, middle.customer_id) == (2, "12345")
    assert (oldest.revision, oldest.status_id, oldest.classified_id) == (None, None, None)


@pytest.mark.parametrize(
    "broken",
    [
        {"portals": ["SL"], "message": "no status", "statusDate": "2024-01-01T00:00:00Z"},
        {"portals": ["SL"], "status": "CREATED", "statusDate": "2024-01-01T00:00:00Z"},
        {"portals": ["SL"], "status": "CREATED", "message": "no date"},
        {"portals": ["SL"], "status": "CREATED", "message": "m", "statusDate": "01/02/2024"},
        {"portals": ["SL"], "status": None, "message": "m", "statusDate": "2024-01-01T00:00:00Z"},
    ],
)
async def test_items_without_required_fields_make_the_page_malformed(
    simulator: RunningSimulator, v3: ClassifiedsV3Client, broken: dict[str, Any]
) -> None:
    classified_id = put(simulator, [item(), broken])
    with pytest.raises(UpstreamUnavailable, match="malformed") as caught:
        await v3.classified_statuses(Caller(), classified_id)
    assert caught.value.upstream == "classifieds-v3"
    assert simulator.sim.state.calls("v3") == 1, "a malformed page is not retried"


@pytest.mark.parametrize(
    "body",
    [[], {"items": None}, {"nextToken": "x"}, {"items": [1]}, {"items": [], "nextToken": 5}, "OK"],
)
async def test_malformed_page_shapes(canned: Any, body: Any) -> None:
    client = await canned([body])
    with pytest.raises(UpstreamUnavailable, match="malformed"):
        await client.classified_statuses(Caller(), "c")


async def test_media_item_rules(simulator: RunningSimulator, v3: ClassifiedsV3Client) -> None:
    media = [
        {"portal": "SL", "status": "DOWNLOADED", "subStatus": "DOWNLOADED_001",
         "message": "The media has been successfully downloaded in our system",
         "statusDate": "2020-07-29T12:35:00.000Z", "mediaId": "m1", "statusId": "s1"},
        {"portal": "XX", "status": "AV_CLEANED", "message": "clean", "statusDate": "2020-07-29T12:35:04.000Z"},
        {"status": "TRANSCODING", "message": "new", "statusDate": "2020-07-29T12:35:05.000Z", "extra": 1},
        {"portal": "LI", "status": "AV_QUARANTINED", "message": "virus", "statusDate": "2020-07-29T12:35:06.000Z"},
    ]  # fmt: skip
    classified_id = put(simulator, [item()], m1=media)
    page = await v3.media_statuses(Caller(), classified_id, "m1")
    by_date = sorted(page.items, key=lambda i: i.status_date)
    downloaded, cleaned, unknown, quarantined = by_date
    assert (downloaded.portal, downloaded.raw_portal) == (Portal.SL, None)
    assert downloaded.status is MediaStatusCode.DOWNLOADED
    assert downloaded.sub_status == "DOWNLOADED_001"
    assert (downloaded.media_id, downloaded.status_id) == ("m1", "s1")
    assert not downloaded.action_required
    assert (cleaned.portal, cleaned.raw_portal) == (None, "XX")
    assert (unknown.status, unknown.raw_status, unknown.portal) == (
        MediaStatusCode.UNKNOWN,
        "TRANSCODING",
        None,
    )
    assert quarantined.action_required and quarantined.portal is Portal.LI


async def test_unknown_media_is_not_found(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    classified_id = put(simulator, [item()])
    with pytest.raises(UpstreamNotFound):
        await v3.media_statuses(Caller(), classified_id, "nope")


async def test_empty_history(simulator: RunningSimulator, v3: ClassifiedsV3Client) -> None:
    page = await v3.classified_statuses(Caller(), put(simulator, []))
    assert page.items == () and page.next_token is None


# --- failure kinds and retries ----------------------------------------------------------------


async def test_upstream_400_is_rejected(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        await v3.classified_statuses(Caller(), "c", statuses=["NOT_A_STATUS"])
    assert caught.value.status == 400
    assert "classified_statuses" in str(caught.value)


async def test_one_500_is_retried(simulator: RunningSimulator, v3: ClassifiedsV3Client) -> None:
    simulator.sim.state.add_fault("v3", "error", status=500, count=1)
    page = await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert page.items
    assert simulator.sim.state.calls("v3") == 2


async def test_persistent_500_fails_after_two_retries(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    simulator.sim.state.add_fault("v3", "error", status=502)
    with pytest.raises(UpstreamUnavailable) as caught:
        await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert caught.value.status == 502
    assert simulator.sim.state.calls("v3") == 3


async def test_rate_limit_honours_retry_after(simulator: RunningSimulator, session: Pool) -> None:
    credentials = StaticCredentials(simulator.sim.state.issue_token(TENANT))
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    v3 = ClassifiedsV3Client(
        session,
        simulator.v3_url,
        credentials,
        USER_AGENT,
        30.0,
        retry_policy=RetryPolicy(sleep=sleep),
    )
    simulator.sim.state.add_fault("v3", "rate_limit", count=1, retry_after=4)
    page = await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert page.items
    assert waited == [4.0]
    assert simulator.sim.state.calls("v3") == 2


async def test_rate_limit_longer_than_the_deadline_fails_fast(
    simulator: RunningSimulator, session: Pool, v3: ClassifiedsV3Client
) -> None:
    v3 = await short_deadline(simulator, session, v3)
    simulator.sim.state.add_fault("v3", "rate_limit", retry_after=3600)
    with pytest.raises(UpstreamUnavailable) as caught:  # ends only if nothing waits an hour
        await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert caught.value.status == 429
    assert caught.value.retry_after == 3600
    assert simulator.sim.state.calls("v3") == 1


async def test_hanging_upstream_is_cut_at_the_deadline(
    simulator: RunningSimulator, session: Pool, v3: ClassifiedsV3Client
) -> None:
    v3 = await short_deadline(simulator, session, v3)
    simulator.sim.state.add_fault("v3", "timeout", delay_s=3600)
    with pytest.raises(UpstreamUnavailable) as caught:  # ends only because of the deadline
        await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert isinstance(caught.value.__cause__, TimeoutError)  # the deadline, not an answer
    assert simulator.sim.state.calls("v3") >= 2


async def test_one_slow_answer_is_retried_in_time(
    simulator: RunningSimulator, session: Pool, v3: ClassifiedsV3Client
) -> None:
    v3 = await short_deadline(simulator, session, v3)
    simulator.sim.state.add_fault("v3", "timeout", delay_s=3, count=1)
    page = await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert page.items
    assert simulator.sim.state.calls("v3") == 2


async def test_connection_reset_is_retried(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    simulator.sim.state.add_fault("v3", "reset", count=1)
    page = await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])
    assert page.items
    assert simulator.sim.state.calls("v3") == 2


async def test_truncated_body_is_unavailable(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    simulator.sim.state.add_fault("v3", "malformed")
    with pytest.raises(UpstreamUnavailable, match="malformed"):
        await v3.classified_statuses(Caller(), simulator.sim.data.tenants[TENANT][1])


async def test_concurrent_reads_all_succeed(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    ids = simulator.sim.data.tenants[TENANT][:12]
    pages = await asyncio.gather(*(v3.classified_statuses(Caller(), c, limit=5) for c in ids))
    assert len(pages) == 12
    assert simulator.sim.state.calls("token") == 1


# --- webhooks ------------------------------------------------------------------------------


async def test_subscribe_and_unsubscribe(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    await v3.subscribe_webhook(
        Caller(), "https://hooks.example.com/gw", [ClassifiedStatusCode.CREATED, "DELETED"]
    )
    (put_request,) = v3_requests(simulator, "webhooks_put")
    assert put_request.method == "PUT"
    assert put_request.path == "/v3/webhooks"
    assert put_request.body == {
        "url": "https://hooks.example.com/gw",
        "statuses": ["CREATED", "DELETED"],
    }
    (subscription,) = simulator.sim.state.subscriptions
    assert subscription.url == "https://hooks.example.com/gw"
    assert subscription.intermediary_id == TENANT
    await v3.subscribe_webhook(Caller(), "https://hooks.example.com/all")
    assert v3_requests(simulator, "webhooks_put")[1].body == {
        "url": "https://hooks.example.com/all"
    }
    await v3.unsubscribe_webhook(Caller())
    (delete_request,) = v3_requests(simulator, "webhooks_delete")
    assert delete_request.method == "DELETE" and delete_request.body is None
    assert simulator.sim.state.subscriptions == []


@pytest.mark.parametrize("url", ["", "not a url", "ftp://x/y", "https://", "/relative"])
async def test_subscribe_needs_an_absolute_http_url(
    simulator: RunningSimulator, v3: ClassifiedsV3Client, url: str
) -> None:
    with pytest.raises(InvalidInput):
        await v3.subscribe_webhook(Caller(), url)
    assert simulator.sim.state.calls("v3") == 0


async def test_webhook_writes_are_not_retried(
    simulator: RunningSimulator, v3: ClassifiedsV3Client
) -> None:
    simulator.sim.state.add_fault("v3", "error", status=500, endpoint="webhooks_put")
    with pytest.raises(UpstreamUnavailable):
        await v3.subscribe_webhook(Caller(), "https://hooks.example.com/gw")
    assert simulator.sim.state.calls("v3", "webhooks_put") == 1


async def test_webhook_answers_are_any_2xx_with_any_body(canned: Any) -> None:
    client = await canned(["whatever the vendor says"])
    await client.subscribe_webhook(Caller(), "https://hooks.example.com/gw")
    await client.unsubscribe_webhook(Caller())
    assert canned.state["canned"].raw_paths == ["/caas/v3/webhooks", "/caas/v3/webhooks"]


# --- wiring from settings --------------------------------------------------------------------


async def test_open_upstreams_builds_working_clients_and_closes_them(
    simulator: RunningSimulator,
) -> None:
    from gateway.config import Settings
    from gateway.runtime import upstream_options
    from gateway.simulator import SIM_LEGACY_API_KEY
    from gateway.upstreams import open_upstreams

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        v3_url=simulator.v3_url,
        v3_token_url=simulator.token_url,
        v3_client_id=SIM_CLIENT_ID,
        v3_client_secret=SIM_CLIENT_SECRET,
        v3_audience=SIM_AUDIENCE,
        v3_intermediary_id=TENANT,
        legacy_url=simulator.legacy_url,
        legacy_api_key=SIM_LEGACY_API_KEY,
        user_agent=USER_AGENT,
        upstream_timeout_s=1,
    )
    async with open_upstreams(upstream_options(settings)) as upstreams:
        page = await upstreams.v3.classified_statuses(
            Caller(), simulator.sim.data.tenants[TENANT][1]
        )
        user_id, ads = next(iter(simulator.sim.state.legacy_users().items()))
        batch = await upstreams.legacy.ads_status(user_id, ads[:2])
        sessions = [upstreams.v3._session, upstreams.legacy._session]
    assert page.items and len(batch.found) == 2
    assert all(s.closed for s in sessions)
    assert v3_requests(simulator)[0].headers["User-Agent"] == USER_AGENT
    # The legacy API is told who calls too; an HTTP client of its own no longer names itself.
    legacy_calls = [r for r in simulator.sim.state.requests if r.endpoint == "status_post"]
    assert legacy_calls[-1].headers["User-Agent"] == USER_AGENT


@settings(max_examples=300, deadline=None)
@given(value=st.text(min_size=1) | st.from_regex(r"[A-Za-z0-9_.~-]+", fullmatch=True))
def test_a_segment_and_a_query_value_encode_as_quote_does(value: str) -> None:
    """Unreserved text skips quote(): the result must be what quote() would have made."""
    from gateway.upstreams.v3 import _query, _segment

    quoted = quote(value, safe="")
    assert _segment(value) == (quoted.replace(".", "%2E") if quoted in {".", ".."} else quoted)
    assert _query([("k", value)]) == f"k={quoted}"
