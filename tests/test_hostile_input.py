"""Hostile input on `/graphql` and on gRPC: every malformed request is a 4xx or a GraphQL
error (gRPC: a status other than INTERNAL or UNKNOWN), never a 5xx, a hang or a logged
traceback, and an id reaches V3 only percent-encoded, as one path segment."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import grpc
import httpx
import orjson
import pytest
from hostile import SpiedSimulator, decoded_ids, unencoded_paths
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from gateway.app import create_app, server_options
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway, serve_app, settings_for

JSON = "application/json"
WEBHOOK_SECRET = "hostile-input-secret-8d3f"
GRAPHQL_RESPONSE = "application/graphql-response+json"

LISTING = "query($ref: ListingRef!) { listing(ref: $ref) { id state classified { latestStatus { status } } } }"
MEDIA = (
    "query($ref: ListingRef!, $media: ID!) { listing(ref: $ref) "
    "{ classified { media(mediaId: $media) { latestStatus { status } } } } }"
)
LISTINGS = "query($refs: [ListingRef!]!) { listings(refs: $refs) { id state } }"
NODE = "query($id: ID!) { node(id: $id) { id } }"

# Ids that try to leave their path segment, plus the odd and the enormous.
PATH_TRICKS = [
    "..",
    ".",
    "../../v3/webhooks",
    "a/b",
    "a?b=c#d",
    "%2F",
    "%2e%2e",
    "a%00b",
    "\\..\\x",
    "x" * 300,
    "\u202eevil",
    "ünïcødé",
    "a b",
    ";x=1",
]


@dataclass
class InProcess:
    """The gateway app served in-process (httpx ASGITransport) against a spied simulator."""

    client: httpx.AsyncClient
    sim: SpiedSimulator
    sent_ids: set[str] = field(default_factory=set)


async def _start(stack: AsyncExitStack) -> InProcess:
    sim = SpiedSimulator()
    running: RunningSimulator = await stack.enter_async_context(sim.serve())
    app = create_app(settings_for(running, webhook_secret=WEBHOOK_SECRET))
    await stack.enter_async_context(app.router.lifespan_context(app))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30)
    )
    return InProcess(client=client, sim=sim)


@pytest.fixture
async def inproc() -> AsyncIterator[InProcess]:
    async with AsyncExitStack() as stack:
        yield await _start(stack)


# --- one case at a time ---------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], int]] = [
    ("invalid JSON", {"content": b'{"query":', "headers": {"content-type": JSON}}, 400),
    ("invalid UTF-8", {"content": b'{"query":"{ \xff }"}', "headers": {"content-type": JSON}}, 400),
    (
        "lone surrogate",
        {
            "content": b'{"query":"{ __typename }","variables":{"a":"\\udfff"}}',
            "headers": {"content-type": JSON},
        },
        400,
    ),
    ("no content type", {"content": b'{"query":"{ __typename }"}'}, 415),
    ("text/plain", {"content": b"{ __typename }", "headers": {"content-type": "text/plain"}}, 415),
    (
        "latin-1 charset",
        {
            "content": b'{"query":"{ __typename }"}',
            "headers": {"content-type": "application/json; charset=latin-1"},
        },
        415,
    ),
    ("batched array", {"json": [{"query": "{ __typename }"}]}, 400),
    ("a string body", {"json": "{ __typename }"}, 400),
    ("a number body", {"json": 3}, 400),
    ("no query", {"json": {"variables": {}}}, 400),
    ("query not a string", {"json": {"query": 3}}, 400),
    ("operationName not a string", {"json": {"query": "{ __typename }", "operationName": []}}, 400),
    ("variables a list", {"json": {"query": "{ __typename }", "variables": [1]}}, 400),
    ("variables a string", {"json": {"query": "{ __typename }", "variables": "{}"}}, 400),
    ("extensions a list", {"json": {"query": "{ __typename }", "extensions": [1]}}, 400),
    (
        "variables nested too deep",
        {
            "json": {
                "query": "{ __typename }",
                "variables": {"a": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]},
            }
        },
        400,
    ),
    (
        "JSON nested past the parser's limit",
        {
            "content": b'{"query":"{ __typename }","variables":{"a":'
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
            "headers": {"content-type": JSON},
        },
        400,
    ),
]


@pytest.mark.parametrize(("name", "request_kwargs", "status"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_requests_are_refused_with_a_coded_error(
    inproc: InProcess, name: str, request_kwargs: dict[str, Any], status: int
) -> None:
    response = await inproc.client.post("/graphql", **request_kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(JSON)
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert inproc.sim.raw_paths == [], "nothing may reach an upstream"


async def test_refusals_use_the_graphql_response_media_type_when_accepted(
    inproc: InProcess,
) -> None:
    response = await inproc.client.post(
        "/graphql", json=[{"query": "{ __typename }"}], headers={"accept": GRAPHQL_RESPONSE}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert "batched" in response.json()["errors"][0]["message"]


async def test_bad_variables_over_get_are_refused(inproc: InProcess) -> None:
    for variables in ("%ff", "[1]", '"x"'):
        response = await inproc.client.get(
            "/graphql", params={"query": "{ __typename }", "variables": variables}
        )
        assert response.status_code == 400, (variables, response.text)
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("bad_id", ["", " ", "x" * 257, "a\x00b", "line\nbreak"])
async def test_ids_that_cannot_be_v3_ids_are_refused_before_any_upstream_call(
    inproc: InProcess, bad_id: str
) -> None:
    for query, variables in (
        (LISTING, {"ref": {"classifiedId": bad_id}}),
        (MEDIA, {"ref": {"classifiedId": "c-1"}, "media": bad_id}),
    ):
        response = await inproc.client.post(
            "/graphql", json={"query": query, "variables": variables}
        )
        body = response.json()
        assert response.status_code == 200, body
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert inproc.sim.raw_paths == []


async def test_path_characters_in_ids_reach_v3_percent_encoded(inproc: InProcess) -> None:
    for trick in PATH_TRICKS[:9]:
        response = await inproc.client.post(
            "/graphql",
            json={"query": MEDIA, "variables": {"ref": {"classifiedId": trick}, "media": trick}},
        )
        assert response.status_code == 200, response.text
    v3_paths = [p for p in inproc.sim.raw_paths if p.startswith("/v3/")]
    assert unencoded_paths(inproc.sim.raw_paths) == []
    assert decoded_ids(v3_paths) == set(PATH_TRICKS[:9])
    assert "/v3/classifieds/..%2F..%2Fv3%2Fwebhooks/statuses" in {
        p.replace("/media/..%2F..%2Fv3%2Fwebhooks", "") for p in v3_paths
    }
    assert "/v3/classifieds/%2E%2E/media/%2E%2E/statuses" in v3_paths


# --- a thousand generated hostile requests, in-process ----------------------------------------


@pytest.fixture
def loop_gateway() -> Iterator[tuple[asyncio.AbstractEventLoop, InProcess]]:
    """The in-process gateway on a private event loop, for a synchronous hypothesis test."""
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        gateway = loop.run_until_complete(_start(stack))
        yield loop, gateway
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


ids = st.one_of(st.sampled_from(PATH_TRICKS), st.text(max_size=24))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


# Strategies the generators below draw from are built once, here: hypothesis validates a
# strategy object the first time it draws from it, and a strategy built inside a generator is
# a new object at every draw.
one_in_4 = st.integers(0, 3)
one_in_5 = st.integers(0, 4)
one_in_6 = st.integers(0, 5)
payload_kinds = st.sampled_from(["listing", "media", "listings", "node", "free"])
any_ints = st.integers()
free_queries = st.text(max_size=60)


@st.composite
def graphql_payloads(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(payload_kinds)
    ref = {"classifiedId": draw(ids)}
    if draw(st.booleans()):
        ref["legacy"] = {"userId": draw(any_ints), "adId": draw(any_ints)}
    payload: dict[str, Any]
    if kind == "listing":
        payload = {"query": LISTING, "variables": {"ref": ref}}
    elif kind == "media":
        payload = {"query": MEDIA, "variables": {"ref": ref, "media": draw(ids)}}
    elif kind == "listings":
        payload = {"query": LISTINGS, "variables": {"refs": [ref] * draw(one_in_4)}}
    elif kind == "node":
        payload = {"query": NODE, "variables": {"id": draw(ids)}}
    else:
        payload = {"query": draw(free_queries), "variables": draw(json_values)}
    for key in ("operationName", "extensions"):
        if draw(one_in_5) == 0:
            payload[key] = draw(json_values)
    if draw(one_in_6) == 0:
        payload["variables"] = draw(json_values)
    return payload


def _deep(depth: int) -> bytes:
    return b'{"query":"{ __typename }","variables":{"a":' + b"[" * depth + b"]" * depth + b"}}"


def _dumps(value: Any) -> bytes:
    # The standard library writes integers of any size, which hostile bodies contain.
    return json.dumps(value).encode()


payloads = graphql_payloads()
bodies = st.one_of(
    payloads.map(_dumps),
    payloads.map(_dumps),
    payloads.map(_dumps),
    st.lists(payloads, max_size=3).map(_dumps),
    json_values.map(_dumps),
    st.binary(max_size=64),
    payloads.map(lambda p: _dumps(p)[: len(_dumps(p)) // 2]),
    st.integers(1, 3000).map(_deep),
)
header_bytes = st.binary(max_size=40).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
content_types = st.one_of(
    st.sampled_from(
        [
            JSON,
            JSON,
            JSON,
            "application/json; charset=utf-8",
            "application/json; charset=latin-1",
            GRAPHQL_RESPONSE,
            "text/plain",
            "application/graphql",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ]
    ),
    header_bytes,
)


status_bodies = st.fixed_dictionaries(
    {},
    optional={
        "status": st.one_of(st.sampled_from(["UPDATED", "CREATED", "NOPE", ""]), json_values),
        "message": st.one_of(st.text(max_size=20), json_values),
        "statusDate": st.one_of(
            st.sampled_from(
                [
                    "2030-01-02T03:04:05Z",
                    "2030-13-45T99:99:99Z",
                    "yesterday",
                    "0001-01-01T00:00:00+01:00",
                    "9999-12-31T23:59:59-01:00",
                ]
            ),
            json_values,
        ),
        "portals": st.one_of(st.lists(st.sampled_from(["SL", "BU", "XX", ""])), json_values),
        "classifiedId": st.one_of(ids, json_values),
        "subStatus": json_values,
        "statusId": json_values,
    },
)


webhook_secrets = st.sampled_from([WEBHOOK_SECRET, WEBHOOK_SECRET[:-1], "", "..", "%2F"])
webhook_bodies = st.one_of(status_bodies.map(_dumps), bodies)
accepts = st.sampled_from([JSON, GRAPHQL_RESPONSE, "*/*", f"{GRAPHQL_RESPONSE}, {JSON}"])


@st.composite
def webhook_deliveries(draw: st.DrawFn) -> httpx.Request:
    secret = draw(webhook_secrets)
    classified = quote(draw(ids), safe="") or "x"
    path = f"/webhooks/v3/{secret}/classifieds/{classified}/statuses"
    body = draw(webhook_bodies)
    headers = {"content-type": draw(content_types)}
    return httpx.Request("POST", "http://gateway" + path, content=body, headers=headers)


deliveries = webhook_deliveries()


@st.composite
def hostile_requests(draw: st.DrawFn) -> httpx.Request:
    if draw(one_in_5) == 0:
        return draw(deliveries)
    headers: dict[str, str | bytes] = {"accept": draw(accepts)}
    for name in ("x-intermediary-id", "authorization", "traceparent"):
        if draw(one_in_4) == 0:
            headers[name] = draw(header_bytes)
    if draw(one_in_5) == 0:
        payload = draw(payloads)
        params = {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in payload.items()
        }
        return httpx.Request("GET", "http://gateway/graphql", params=params, headers=headers)
    headers["content-type"] = draw(content_types)
    return httpx.Request("POST", "http://gateway/graphql", content=draw(bodies), headers=headers)


def _payload_ids(request: httpx.Request) -> set[str]:
    try:
        payload = orjson.loads(request.content) if request.method == "POST" else None
    except orjson.JSONDecodeError:
        return set()
    found: set[str] = set()
    stack: list[Any] = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            found.add(value)
    return found


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@seed(19)
@given(request=hostile_requests())
def test_a_thousand_hostile_requests_get_no_5xx_and_no_unencoded_upstream_path(
    loop_gateway: tuple[asyncio.AbstractEventLoop, InProcess], request: httpx.Request
) -> None:
    loop, gateway = loop_gateway
    before = len(gateway.sim.raw_paths)
    response = loop.run_until_complete(gateway.client.send(request))
    assert response.status_code < 500, response.text
    graphql = request.url.path == "/graphql"
    if graphql and response.headers.get("content-type", "").startswith((JSON, GRAPHQL_RESPONSE)):
        body = response.json()
        assert "data" in body or body.get("errors"), body
        for error in body.get("errors") or ():
            assert error["extensions"]["code"], error
    new_paths = gateway.sim.raw_paths[before:]
    assert unencoded_paths(new_paths) == []
    if request.url.path.startswith("/webhooks/"):
        assert new_paths == [], "the receiver never calls an upstream"
    elif request.method == "POST":
        assert decoded_ids(new_paths) <= _payload_ids(request)


# --- a few over a real socket -------------------------------------------------------------------


async def _raw_exchange(url: str, raw: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_hostile_requests_over_a_real_socket(simulator: RunningSimulator) -> None:
    async with run_gateway(simulator) as gw:
        gateway: RunningGateway = gw
        for content, content_type in (
            (b"\xff\xfe\xfd", JSON),
            (b'[{"query":"{ __typename }"}]', JSON),
            (b'{"query":"{ __typename }"}', "text/plain"),
        ):
            response = await gateway.client.post(
                "/graphql", content=content, headers={"content-type": content_type}
            )
            assert 400 <= response.status_code < 500, response.text
        for header in (
            b"X-Intermediary-Id: a\x01b",
            b"Traceparent: \x7f\x1b[0m",
            b"Authorization: \x08",
        ):
            status_line = await _raw_exchange(
                gateway.url,
                b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                + header
                + b'\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{"query":"{ __typename }"}',
            )
            status = int(status_line.split()[1])
            assert status < 500, status_line


# --- a thousand generated hostile gRPC requests, over a real channel --------------------------

SERVICE = "/listing.v1.ListingStatusService/"
GRPC_METHODS = ("GetListing", "BatchGetListings", "ListClassifiedStatuses", "WatchClassifiedStatus")
READ_MASK_PATHS = ["state", "portals", "legacy", "classified", "classified.id"]
READ_MASK_PATHS += ["classified.latest_status", "classified.statuses", "", "x" * 5000]


@dataclass
class GrpcTarget:
    """The gateway's gRPC server (in this process, on a private loop) and a channel to it."""

    channel: grpc.aio.Channel
    sim: SpiedSimulator
    errors: list[logging.LogRecord]


class _Errors(logging.Handler):
    """Keeps every record at ERROR or above: a traceback logged anywhere fails the test."""

    def __init__(self, kept: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        self.kept.append(record)


async def _start_grpc(stack: AsyncExitStack) -> GrpcTarget:
    sim = SpiedSimulator()
    running: RunningSimulator = await stack.enter_async_context(sim.serve())
    app = create_app(settings_for(running, grpc_port=0, warm_up=False), grpc=True)
    await stack.enter_async_context(app.router.lifespan_context(app))
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(app.state.grpc.address))
    errors: list[logging.LogRecord] = []
    handler = _Errors(errors)
    logging.getLogger().addHandler(handler)
    stack.callback(logging.getLogger().removeHandler, handler)
    return GrpcTarget(channel=channel, sim=sim, errors=errors)


@pytest.fixture
def loop_grpc() -> Iterator[tuple[asyncio.AbstractEventLoop, GrpcTarget]]:
    """The gRPC edge on a private event loop, for a synchronous hypothesis test."""
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        target = loop.run_until_complete(_start_grpc(stack))
        yield loop, target
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


metadata_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)
int64s = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, -(2**63)])
)
int32s = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 100, 101, -1]))
enum_numbers = st.one_of(st.integers(0, 15), st.sampled_from([999, 2**31 - 1, -1, -(2**31)]))


def _forged_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


page_tokens = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.sampled_from(
        [
            "ks:2024-01-01T00:00:00|x",  # a date without UTC offset
            "ks:2024-01-01T00:00:00+00:00|x",
            "ks:0001-01-01T00:00:00+14:00|x",
            "ks:9999-12-31T23:59:59-14:00|",
            "ks:|",
            "v3:",
            "v3:" + "t" * 3000,
            "ks:2024-13-45T99:99:99Z|y",
        ]
    ).map(_forged_token),
    st.text(max_size=30).map(lambda text: _forged_token("ks:" + text)),
)


@st.composite
def grpc_refs(draw: st.DrawFn) -> pb.ListingRef:
    ref = pb.ListingRef()
    if draw(st.booleans()):
        ref.classified_id = draw(ids)
    if draw(st.booleans()):
        ref.legacy.user_id = draw(int64s)
        ref.legacy.ad_id = draw(int64s)
    return ref


masks = st.lists(st.one_of(st.sampled_from(READ_MASK_PATHS), st.text(max_size=20)), max_size=4)
methods = st.sampled_from(GRPC_METHODS)
grpc_ref_values = grpc_refs()
batch_counts = st.one_of(st.integers(0, 4), st.just(201))
watch_counts = st.one_of(st.integers(0, 3), st.just(201))
watch_ids = {count: st.lists(ids, min_size=count, max_size=count) for count in range(4)}
enum_lists = st.lists(enum_numbers, max_size=3)
not_messages = st.binary(min_size=1, max_size=40)


def _mask(draw: st.DrawFn) -> list[str]:
    return draw(masks)


@st.composite
def grpc_calls(draw: st.DrawFn) -> tuple[str, bytes, tuple[tuple[str, str], ...]]:
    """(method, request bytes, metadata): a well-formed message with hostile values, or bytes
    that are not the method's message at all."""
    method = draw(methods)
    request: Any
    if method == "GetListing":
        request = pb.GetListingRequest(ref=draw(grpc_ref_values))
        request.read_mask.paths.extend(_mask(draw))
    elif method == "BatchGetListings":
        count = draw(batch_counts)
        request = pb.BatchGetListingsRequest(refs=[draw(grpc_ref_values)] * count)
        request.read_mask.paths.extend(_mask(draw))
    elif method == "ListClassifiedStatuses":
        request = pb.ListClassifiedStatusesRequest(
            classified_id=draw(ids),
            page_size=draw(int32s),
            page_token=draw(page_tokens),
        )
        request.statuses.extend(draw(enum_lists))
        request.portals.extend(draw(enum_lists))
    else:
        count = draw(watch_counts)
        # Past the limit the count is what matters: a few drawn ids, repeated (as above).
        drawn = draw(watch_ids[min(count, 3)])
        request = pb.WatchClassifiedStatusRequest(classified_ids=(drawn * count)[:count])
    raw = request.SerializeToString()
    if draw(one_in_6) == 0:  # not this message: cut short, or other bytes
        raw = draw(st.one_of(not_messages, st.just(raw[: len(raw) // 2])))
    metadata = tuple(
        (name, draw(metadata_values))
        for name in ("x-intermediary-id", "authorization", "traceparent")
        if draw(one_in_4) == 0
    )
    return method, raw, metadata


async def _grpc_exchange(
    channel: grpc.aio.Channel, method: str, raw: bytes, metadata: tuple[tuple[str, str], ...]
) -> grpc.StatusCode | None:
    """The call's status code; None for a watch stream that was set up (then cancelled)."""
    try:
        if method == "WatchClassifiedStatus":
            call = channel.unary_stream(SERVICE + method)(raw, metadata=metadata, timeout=30)
            await call.initial_metadata()
            if call.done():
                return await call.code()
            call.cancel()
            return None
        await channel.unary_unary(SERVICE + method)(raw, metadata=metadata, timeout=30)
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as failed:
        assert "Traceback" not in (failed.details() or "")
        assert len(failed.details() or "") < 1000, (method, len(failed.details() or ""))
        return failed.code()


@settings(
    max_examples=1000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@seed(20)
@given(call=grpc_calls())
def test_a_thousand_hostile_grpc_requests_get_no_internal_error_and_no_traceback(
    loop_grpc: tuple[asyncio.AbstractEventLoop, GrpcTarget],
    call: tuple[str, bytes, tuple[tuple[str, str], ...]],
) -> None:
    loop, target = loop_grpc
    method, raw, metadata = call
    before = len(target.sim.raw_paths)
    code = loop.run_until_complete(_grpc_exchange(target.channel, method, raw, metadata))
    event(f"{method}: {code.name if code is not None else 'watching'}")
    assert code not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}, (method, raw)
    assert [record.getMessage() for record in target.errors] == []
    assert unencoded_paths(target.sim.raw_paths[before:]) == []


# --- a thousand generated hostile WebSocket messages, on a real socket --------------------------

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
WATCH = (
    "subscription($ids: [ID!]) { classifiedStatusChanged(classifiedIds: $ids) { classifiedId } }"
)
# How the server may end a socket: a normal close, or a code the protocols define. 1006 (the
# connection dropped without a close frame) is what a failing handler did.
CLOSE_CODES = {1000, 1009, 4400, 4401, 4403, 4408, 4409, 4429}


@dataclass
class WebSocketTarget:
    """The gateway (uvicorn, in this process, on a private loop) against a spied simulator."""

    url: str
    sim: SpiedSimulator
    errors: list[logging.LogRecord]
    session: aiohttp.ClientSession  # each hostile session opens its own socket through it
    messages: list[int] = field(default_factory=lambda: [0])


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _start_websocket(stack: AsyncExitStack) -> WebSocketTarget:
    sim = SpiedSimulator()
    running: RunningSimulator = await stack.enter_async_context(sim.serve())
    settings = settings_for(running, warm_up=False)
    app = create_app(settings)
    url = await stack.enter_async_context(serve_app(app, **server_options(settings)))
    errors: list[logging.LogRecord] = []
    handler = _Errors(errors)
    for name in ("", "uvicorn"):  # uvicorn's loggers do not reach the root
        logging.getLogger(name).addHandler(handler)
        stack.callback(logging.getLogger(name).removeHandler, handler)
    session = await stack.enter_async_context(aiohttp.ClientSession())
    url = url.replace("http://", "ws://") + "/graphql"
    return WebSocketTarget(url=url, sim=sim, errors=errors, session=session)


@pytest.fixture
def loop_websocket() -> Iterator[tuple[asyncio.AbstractEventLoop, WebSocketTarget]]:
    """The gateway on a private event loop, for a synchronous hypothesis test; at the end,
    at least a thousand messages were sent and the descriptors are back where they were."""
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        target = loop.run_until_complete(_start_websocket(stack))
        descriptors = _open_descriptors()
        yield loop, target
        assert target.messages[0] >= 1000, target.messages
        assert _open_descriptors() <= descriptors + 5
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


websocket_ids = st.one_of(
    st.sampled_from(["1", "2", "a"]), st.text(max_size=8), st.text(min_size=100), json_values
)
websocket_queries = st.one_of(
    st.sampled_from(
        [
            LISTING,
            MEDIA,
            LISTINGS,
            NODE,
            WATCH,
            "{ __typename }",
            "subscription { classifiedStatusChanged(",
            "query { listing(ref: {}) { id } }",
            'mutation { refreshListing(ref: {classifiedId: "x"}) { id } }',
            "{ " + "__typename " * 20_001 + "}",
        ]
    ),
    st.text(max_size=60),
)
websocket_variables = st.one_of(
    st.fixed_dictionaries({"ref": st.fixed_dictionaries({"classifiedId": ids})}),
    st.fixed_dictionaries({"ref": st.fixed_dictionaries({"classifiedId": ids})}),
    st.fixed_dictionaries({"ids": st.lists(ids, max_size=3)}),
    st.fixed_dictionaries({"refs": st.lists(st.fixed_dictionaries({"classifiedId": ids}))}),
    st.integers(1, 60).map(lambda depth: {"deep": json.loads("[" * depth + "]" * depth)}),
    st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    json_values,
)
# Mostly of the right types, so that most operations are parsed, checked and run.
operation_payloads = st.fixed_dictionaries(
    {"query": websocket_queries},
    optional={
        "variables": websocket_variables,
        "operationName": st.one_of(st.none(), st.none(), st.text(max_size=10), json_values),
        "extensions": st.one_of(st.none(), st.none(), st.just({}), json_values),
    },
)


def _session_messages(protocol: str) -> tuple[st.SearchStrategy[str], st.SearchStrategy[Any]]:
    """What one client of `protocol` sends: (well-formed messages, hostile ones)."""
    start, stop, others = (
        ("subscribe", "complete", ["ping", "pong"])
        if protocol == TRANSPORT_WS
        else ("start", "stop", ["connection_terminate"])
    )
    operation = st.fixed_dictionaries(
        {
            "type": st.just(start),
            "id": st.sampled_from(["1", "2", "3", "4"]),
            "payload": operation_payloads,
        }
    )
    stopping = st.fixed_dictionaries({"type": st.just(stop), "id": websocket_ids})
    control = st.fixed_dictionaries(
        {"type": st.sampled_from(["connection_init", *others])},
        optional={"payload": json_values},
    )
    odd = st.one_of(
        st.fixed_dictionaries(
            {"type": st.just(start), "id": websocket_ids, "payload": json_values}
        ),
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.one_of(st.text(max_size=12), st.text(min_size=100), json_values),
                "id": websocket_ids,
                "payload": json_values,
            },
        ),
        json_values,
    )
    encoded = st.one_of(*[operation] * 8, stopping, control, odd, odd).map(json.dumps)
    hostile = st.one_of(
        *[encoded] * 12,
        encoded.map(lambda text: text[: len(text) // 2]),
        st.text(max_size=32),
        st.binary(max_size=32),
    )
    well_formed = st.one_of(
        *[operation] * 4,
        st.fixed_dictionaries({"type": st.just(stop), "id": st.sampled_from(["1", "2"])}),
    ).map(json.dumps)
    return well_formed, hostile


# Built once: a strategy made inside a composite is made again for every example.
SESSION_MESSAGES = {protocol: _session_messages(protocol) for protocol in (TRANSPORT_WS, LEGACY_WS)}


@st.composite
def websocket_sessions(draw: st.DrawFn) -> tuple[str, list[str | bytes]]:
    """A protocol and the messages one client sends on one socket: half the sessions
    well-formed (their operations then run to their answers: a malformed message closes the
    socket, cancelling what runs on it), half with messages of the wrong shape or not JSON."""
    protocol = draw(st.sampled_from([TRANSPORT_WS, LEGACY_WS]))
    well_formed, hostile = SESSION_MESSAGES[protocol]
    chosen = well_formed if draw(st.booleans()) else hostile
    sent: list[str | bytes] = draw(st.lists(chosen, min_size=4, max_size=8))
    if draw(st.integers(0, 4)):
        sent.insert(0, json.dumps({"type": "connection_init", "payload": {}}))
    return protocol, sent


async def _websocket_session(
    session: aiohttp.ClientSession, url: str, protocol: str, messages: list[str | bytes]
) -> tuple[int, list[Any]]:
    """How many of `messages` were sent before the server closed the socket, and what it
    sent back (decoded), ending with ("closed", code) when it closed."""
    received: list[Any] = []
    sent = 0
    async with session.ws_connect(url, protocols=(protocol,), autoclose=False) as ws:
        for message in messages:
            if ws.closed:
                break
            with contextlib.suppress(ConnectionResetError):
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
                sent += 1
        # The operations that must end on their own get their last message, unless the
        # server closes the socket first; then the end, each protocol's way.
        waiting = _answers_due(messages[:sent])
        ending = False
        async with asyncio.timeout(30):
            while True:
                if waiting <= 0 and not ending and not ws.closed:
                    ending = True
                    last = "ping" if protocol == TRANSPORT_WS else "connection_terminate"
                    with contextlib.suppress(ConnectionResetError):
                        await ws.send_json({"type": last})
                reply = await ws.receive()
                if reply.type is aiohttp.WSMsgType.TEXT:
                    received.append(json.loads(reply.data))
                    kind = received[-1].get("type")
                    waiting -= kind in ("complete", "error")
                    if ending and kind == "pong":
                        break
                elif reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    received.append(("closed", ws.close_code, str(reply.extra)[:40]))
                    break
                else:
                    raise AssertionError(f"unexpected {reply}")
        await ws.close()
    return sent, received


def _answers_due(sent: list[str | bytes]) -> int:
    """How many operations among `sent` end with a `complete` or `error` of their own: the
    well-formed ones after an init, not subscriptions, not stopped by the client."""
    due = 0
    started: dict[str, int] = {}
    initialised = False
    for raw in sent:
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        kind, op, payload = message.get("type"), message.get("id"), message.get("payload")
        if kind == "connection_init":
            initialised = True
        elif kind in ("complete", "stop") and isinstance(op, str) and op in started:
            due -= started.pop(op)
        elif (
            kind in ("subscribe", "start")
            and initialised
            and isinstance(op, str)
            and isinstance(payload, dict)
            and isinstance(payload.get("query"), str)
            and "subscription" not in payload["query"]
        ):
            started[op] = started.get(op, 0) + 1
            due += 1
    return due


def _errors_of(reply: dict[str, Any]) -> list[Any]:
    payload = reply.get("payload")
    if reply.get("type") == "error":
        return payload if isinstance(payload, list) else [payload]
    return (payload or {}).get("errors") or []


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@seed(21)
@given(session=websocket_sessions())
def test_a_thousand_hostile_websocket_messages_get_no_internal_error_and_no_traceback(
    loop_websocket: tuple[asyncio.AbstractEventLoop, WebSocketTarget],
    session: tuple[str, list[str | bytes]],
) -> None:
    loop, target = loop_websocket
    protocol, sent = session
    before = len(target.sim.raw_paths)
    count, received = loop.run_until_complete(
        _websocket_session(target.session, target.url, protocol, sent)
    )
    target.messages[0] += count
    for reply in received:
        if isinstance(reply, tuple):
            event(f"{protocol}: closed {reply[1]} {reply[2]}")
            assert reply[1] in CLOSE_CODES, (reply, sent)
            continue
        assert isinstance(reply, dict), reply
        event(f"{protocol}: {reply.get('type')}")
        for error in _errors_of(reply):
            code = error["extensions"]["code"]
            assert code not in {"INTERNAL_SERVER_ERROR", "INTERNAL"}, (error, sent)
    assert [record.getMessage() for record in target.errors] == []
    assert unencoded_paths(target.sim.raw_paths[before:]) == []
