"""GATEWAY_CLIENT_TOKENS: `/graphql` over HTTP and WebSocket needs a client token; health
stays open; the setting is refused with passthrough; tokens never show in logs."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from gateway.access.client_tokens import ClientTokens
from gateway.config import SettingsError, V3AuthMode, load_settings
from gateway.grpc.generated import listing_status_pb2 as pb
from gateway.grpc.generated import listing_status_pb2_grpc as pb_grpc
from gateway.simulator import RunningSimulator

from gateway_harness import RunningGateway, run_gateway

TOKEN = "client-token-5f2c9a"
OTHER = "other-token-0b1e"
QUERY = {"query": "{ __typename }"}
GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
async def guarded(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with run_gateway(simulator, client_tokens=f"{TOKEN}, {OTHER}") as running:
        yield running


def ws_url(gateway: RunningGateway) -> str:
    return gateway.url.replace("http://", "ws://") + "/graphql"


@pytest.mark.parametrize(
    ("authorization", "invalid"),
    [(None, False), ("Bearer wrong", True), (f"Basic {TOKEN}", True), (TOKEN, True)],
)
async def test_http_without_a_valid_token_is_401(
    guarded: RunningGateway, authorization: str | None, invalid: bool
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    for accept in ("application/json", GRAPHQL_RESPONSE):
        response = await guarded.client.post(
            "/graphql", json=QUERY, headers={**headers, "accept": accept}
        )
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer ")
        assert ('error="invalid_token"' in challenge) is invalid
        assert response.headers["content-type"].startswith(accept)
        (error,) = response.json()["errors"]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
    response = await guarded.client.get("/graphql", params=QUERY, headers=headers)
    assert response.status_code == 401
    assert guarded.calls("v3") + guarded.calls("legacy") + guarded.calls("token") == 0


async def test_http_with_any_configured_token_is_served(guarded: RunningGateway) -> None:
    for token in (TOKEN, OTHER):
        for method in ("GET", "POST"):
            response = await guarded.client.request(
                method,
                "/graphql",
                params=QUERY if method == "GET" else None,
                json=QUERY if method == "POST" else None,
                headers={"authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"data": {"__typename": "Query"}}


async def test_health_and_the_graphiql_page_stay_open(guarded: RunningGateway) -> None:
    assert (await guarded.client.get("/healthz")).status_code == 200
    assert (await guarded.client.get("/readyz")).status_code == 200
    assert (await guarded.client.get("/metrics")).status_code == 200
    page = await guarded.client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]


async def test_the_webhook_receiver_stays_open(simulator: RunningSimulator) -> None:
    secret = "receiver-secret-41c7"
    async with run_gateway(simulator, client_tokens=TOKEN, webhook_secret=secret) as gw:
        classified_id = gw.sim.data.listings[0].classified_id
        delivery = {
            "portals": ["SL"],
            "status": "UPDATED",
            "message": "Classified updated",
            "statusDate": "2030-01-02T03:04:05Z",
        }
        response = await gw.client.post(
            f"/webhooks/v3/{secret}/classifieds/{classified_id}/statuses", json=delivery
        )
        assert response.status_code == 201, response.text


async def _init(gateway: RunningGateway, *, header: str | None, payload: dict[str, str]) -> str:
    """Opens a graphql-transport-ws socket, sends connection_init; the first answer's type,
    or `closed <code>`."""
    extra = {"Authorization": header} if header else None
    async with websockets.connect(
        ws_url(gateway), subprotocols=["graphql-transport-ws"], additional_headers=extra
    ) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            message = json.loads(await socket.recv())
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return f"closed {closed.rcvd.code}"
        if message["type"] == "connection_ack":
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": QUERY}))
            answer = json.loads(await socket.recv())
            assert answer["payload"] == {"data": {"__typename": "Query"}}
        return str(message["type"])


async def test_websocket_needs_a_token_on_the_upgrade_or_in_connection_init(
    guarded: RunningGateway,
) -> None:
    assert await _init(guarded, header=f"Bearer {TOKEN}", payload={}) == "connection_ack"
    assert (
        await _init(guarded, header=None, payload={"authorization": f"Bearer {OTHER}"})
        == "connection_ack"
    )
    assert await _init(guarded, header=None, payload={}) == "closed 4401"
    assert (
        await _init(guarded, header=None, payload={"authorization": "Bearer nope"}) == "closed 4401"
    )
    assert await _init(guarded, header="Bearer nope", payload={}) == "closed 4401"


async def test_a_socket_that_skips_connection_init_is_closed_4401(
    guarded: RunningGateway,
) -> None:
    async with websockets.connect(ws_url(guarded), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": QUERY}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_an_open_gateway_needs_no_token(gateway: RunningGateway) -> None:
    response = await gateway.client.post("/graphql", json=QUERY)
    assert response.status_code == 200


async def test_tokens_never_reach_the_logs(
    guarded: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await guarded.client.post("/graphql", json=QUERY, headers={"authorization": "Bearer wrong"})
    await guarded.client.post(
        "/graphql",
        json={"query": "{ listingz }"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert TOKEN not in caplog.text
    assert "wrong" not in caplog.text
    assert TOKEN not in repr(ClientTokens([TOKEN]))


def test_tokens_compare_whole_and_exact() -> None:
    tokens = ClientTokens([TOKEN, OTHER])
    assert tokens.allows(f"Bearer {TOKEN}")
    assert tokens.allows(f"bearer  {OTHER} ")
    assert not tokens.allows(f"Bearer {TOKEN}x")
    assert not tokens.allows(f"Bearer {TOKEN[:-1]}")
    assert not tokens.allows("Bearer ")
    assert not tokens.allows(None)
    assert ClientTokens([]).allows(None)


def test_client_tokens_are_refused_with_passthrough() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            v3_url="http://127.0.0.1:1",
            legacy_url="http://127.0.0.1:1",
            legacy_api_key="k",
            v3_auth=V3AuthMode.PASSTHROUGH,
            client_tokens=TOKEN,
        )
    message = str(caught.value)
    assert message.startswith("GATEWAY_CLIENT_TOKENS")
    assert "passthrough" in message
    assert TOKEN not in message


# --- tokens bound to agencies ----------------------------------------------------------------

BOUND = "bound-token-7d41"
LATEST = "query($id: ID!) { listing(ref: {classifiedId: $id}) { classified { id } } }"


@pytest.fixture
async def bound(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    """agency-1 is the default agency; BOUND acts for agency-2 and agency-1, OTHER for any."""
    async with run_gateway(
        simulator, grpc=True, client_tokens=f"{BOUND}@agency-2|agency-1,{OTHER}"
    ) as running:
        yield running


async def test_a_bound_token_acts_only_for_its_agencies_over_http(
    bound: RunningGateway, simulator: RunningSimulator
) -> None:
    """A client token used to let its holder name any agency with X-Intermediary-Id."""
    tenants = simulator.sim.data.tenants
    auth = {"authorization": f"Bearer {BOUND}"}

    async def latest(agency: str | None, token: dict[str, str]) -> tuple[int, dict[str, object]]:
        tenant = agency or "agency-1"
        headers = token | ({"x-intermediary-id": agency} if agency else {})
        body = {"query": LATEST, "variables": {"id": tenants[tenant][0]}}
        response = await bound.client.post("/graphql", json=body, headers=headers)
        return response.status_code, response.json()

    for agency in ("agency-2", None):  # named, and the default one
        status, body = await latest(agency, auth)
        assert status == 200 and "errors" not in body, body
    tokens_before = bound.calls("token")
    status, body = await latest("agency-3", auth)
    assert status == 403
    [error] = body["errors"]  # type: ignore[misc]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert BOUND not in json.dumps(body)
    assert bound.calls("token") == tokens_before  # refused before any token request
    # An unbound token still names any agency.
    status, body = await latest("agency-3", {"authorization": f"Bearer {OTHER}"})
    assert status == 200 and "errors" not in body, body


async def test_a_bound_token_acts_only_for_its_agencies_over_websocket_and_grpc(
    bound: RunningGateway, simulator: RunningSimulator
) -> None:
    async def init(agency: str) -> str:
        headers = {"Authorization": f"Bearer {BOUND}", "X-Intermediary-Id": agency}
        async with websockets.connect(
            ws_url(bound), subprotocols=["graphql-transport-ws"], additional_headers=headers
        ) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
            try:
                return str(json.loads(await socket.recv())["type"])
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return f"closed {closed.rcvd.code}"

    assert await init("agency-2") == "connection_ack"
    assert await init("agency-3") == "closed 4403"

    classified_id = simulator.sim.data.tenants["agency-3"][0]
    request = pb.GetListingRequest(ref=pb.ListingRef(classified_id=classified_id))
    async with grpc.aio.insecure_channel(bound.grpc_address) as channel:
        stub = pb_grpc.ListingStatusServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetListing(
                request,
                metadata=(("authorization", f"Bearer {BOUND}"), ("x-intermediary-id", "agency-3")),
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert BOUND not in (refused.value.details() or "")
        listing = await stub.GetListing(
            request,
            metadata=(("authorization", f"Bearer {OTHER}"), ("x-intermediary-id", "agency-3")),
        )
        assert listing.classified.id == classified_id


@pytest.mark.parametrize(
    ("tokens", "agencies", "wanted"),
    [
        (f"{TOKEN}@", "", "entry 1: a bound token reads"),
        (f"{OTHER},@agency-2", "", "entry 2: a bound token reads"),
        (f"{TOKEN}@agency-9", "agency-2", "entry 1 is bound to agencies outside"),
    ],
)
def test_a_malformed_binding_stops_the_start_without_showing_the_token(
    tokens: str, agencies: str, wanted: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            v3_url="http://127.0.0.1:1",
            legacy_url="http://127.0.0.1:1",
            legacy_api_key="k",
            v3_token_url="http://127.0.0.1:1/token",
            v3_client_id="id",
            v3_client_secret="secret",
            v3_audience="audience",
            v3_intermediary_id="agency-1",
            v3_agencies=agencies,
            client_tokens=tokens,
        )
    message = str(caught.value)
    assert wanted in message
    assert TOKEN not in message and OTHER not in message
