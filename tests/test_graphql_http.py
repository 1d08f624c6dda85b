"""docs/graphql.md: `/graphql` per the GraphQL-over-HTTP spec, health, the SDL check."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from gateway.app import create_app
from gateway.cli import build_parser, main
from gateway.domain.models import PublicationState
from gateway.simulator.data import Listing

from gateway_harness import RunningGateway, settings_for

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def agency_listings(gw: RunningGateway) -> list[Listing]:
    data = gw.sim.data
    return [li for li in data.listings if data.tenant_of(li.classified_id) == "agency-1"]


def ref_of(listing: Listing) -> dict[str, Any]:
    return {
        "classifiedId": listing.classified_id,
        "legacy": {"userId": listing.user_id, "adId": listing.ad_id},
    }


def total_calls(gw: RunningGateway) -> int:
    state = gw.sim.state
    return state.calls("v3") + state.calls("legacy") + state.calls("token")


async def post(gw: RunningGateway, payload: Any, accept: str) -> httpx.Response:
    return await gw.client.post("/graphql", json=payload, headers={"accept": accept})


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


LISTING = "query($ref: ListingRef!) { listing(ref: $ref) { classifiedId state } }"


# --- media types and status codes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, {JSON};q=0.9", GRAPHQL_RESPONSE),
        (JSON, JSON),
    ],
)
async def test_answer_in_the_accepted_media_type(
    gateway: RunningGateway, accept: str, expected: str
) -> None:
    listing = agency_listings(gateway)[1]
    response = await post(
        gateway, {"query": LISTING, "variables": {"ref": ref_of(listing)}}, accept
    )
    assert response.status_code == 200, response.text
    assert media_type(response) == expected
    body = response.json()
    assert "errors" not in body, body
    assert body["data"]["listing"]["classifiedId"] == listing.classified_id
    assert body["data"]["listing"]["state"] in {state.value for state in PublicationState}


# Requests refused before execution, and the code each carries.
REQUEST_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("parse error", {"query": "{ listing(ref: {classifiedId: "}, "GRAPHQL_PARSE_FAILED"),
    ("unknown field", {"query": "{ listingz { id } }"}, "GRAPHQL_VALIDATION_FAILED"),
    (
        "bad variables",
        {"query": LISTING, "variables": {"ref": {"classifiedId": ["not", "an", "id"]}}},
        "BAD_USER_INPUT",
    ),
    ("missing variable", {"query": LISTING, "variables": {}}, "BAD_USER_INPUT"),
    (
        "null for a non-null variable",
        {"query": LISTING, "variables": {"ref": None}},
        "BAD_USER_INPUT",
    ),
    ("empty ref", {"query": "{ listing(ref: {}) { state } }"}, "BAD_USER_INPUT"),
    (
        "empty ref in variables",
        {"query": LISTING, "variables": {"ref": {}}},
        "BAD_USER_INPUT",
    ),
    (
        "too many aliases",
        {"query": "{ " + " ".join(f"a{i}: __typename" for i in range(201)) + " }"},
        "QUERY_TOO_COMPLEX",
    ),
]


@pytest.mark.parametrize(("accept", "status"), [(GRAPHQL_RESPONSE, 400), (JSON, 200)])
async def test_request_errors(gateway: RunningGateway, accept: str, status: int) -> None:
    """400 without `data` for a graphql-response+json caller; 200 with `errors` for JSON."""
    failures: list[str] = []
    for name, payload, code in REQUEST_ERRORS:
        response = await post(gateway, payload, accept)
        body = response.json()
        problems = []
        if response.status_code != status:
            problems.append(f"status {response.status_code}")
        if media_type(response) != accept:
            problems.append(f"media type {media_type(response)}")
        if "data" in body:
            problems.append("has data")
        codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors", [])]
        if set(codes) != {code}:
            problems.append(f"codes {codes}")
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {body}")
    assert not failures, "\n".join(failures)
    assert total_calls(gateway) == 0


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
async def test_field_error_is_200_with_data(gateway: RunningGateway, accept: str) -> None:
    known = agency_listings(gateway)[1]
    response = await post(
        gateway,
        {
            "query": "query($refs: [ListingRef!]!) { listings(refs: $refs) { classifiedId "
            "classified { latestStatus { status } } } }",
            "variables": {"refs": [{"classifiedId": "no-such-id"}, ref_of(known)]},
        },
        accept,
    )
    assert response.status_code == 200, response.text
    assert media_type(response) == accept
    body = response.json()
    unknown, found = body["data"]["listings"]
    assert unknown == {"classifiedId": "no-such-id", "classified": {"latestStatus": None}}
    assert found["classified"]["latestStatus"]["status"]
    [error] = body["errors"]
    assert error["path"] == ["listings", 0, "classified", "latestStatus"]
    assert error["extensions"]["code"] == "NOT_FOUND"


# --- GET ---------------------------------------------------------------------------------------


async def test_get_runs_queries(gateway: RunningGateway) -> None:
    listing = agency_listings(gateway)[1]
    response = await gateway.client.get(
        "/graphql",
        params={
            "query": f'{{ listing(ref: {{classifiedId: "{listing.classified_id}"}}) '
            "{ classifiedId classified { latestStatus { status } } } }"
        },
        headers={"accept": JSON},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]["listing"]
    assert data["classifiedId"] == listing.classified_id
    assert data["classified"]["latestStatus"]["status"]

    response = await gateway.client.get(
        "/graphql",
        params={
            "query": "query($id: ID!) { listing(ref: {classifiedId: $id}) { classifiedId } }",
            "variables": f'{{"id": "{listing.classified_id}"}}',
        },
        headers={"accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 200, response.text
    assert media_type(response) == GRAPHQL_RESPONSE
    assert response.json() == {"data": {"listing": {"classifiedId": listing.classified_id}}}


@pytest.mark.parametrize("accept", [GRAPHQL_RESPONSE, JSON])
async def test_get_refuses_mutations_with_405(gateway: RunningGateway, accept: str) -> None:
    listing = agency_listings(gateway)[0]
    response = await gateway.client.get(
        "/graphql",
        params={
            "query": f'mutation {{ refreshListing(ref: {{classifiedId: "{listing.classified_id}"}}) '
            "{ id state } }"
        },
        headers={"accept": accept},
    )
    assert response.status_code == 405, response.text
    assert total_calls(gateway) == 0
    # ... while the same mutation over POST runs.
    response = await gateway.client.post(
        "/graphql",
        json={
            "query": "mutation($id: ID!) { refreshListing(ref: {classifiedId: $id}) { state } }",
            "variables": {"id": listing.classified_id},
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["refreshListing"]["state"]


async def test_graphiql_for_browsers(gateway: RunningGateway) -> None:
    response = await gateway.client.get(
        "/graphql", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert response.status_code == 200
    assert media_type(response) == "text/html"
    assert "graphiql" in response.text.lower()
    assert "<html" in response.text.lower()


# --- body limit --------------------------------------------------------------------------------


def padded_payload(size: int) -> bytes:
    """A valid request body of exactly `size` bytes (the query padded with spaces)."""
    head, tail = b'{"query": "', b'{ __typename }"}'
    return head + b" " * (size - len(head) - len(tail)) + tail


async def test_body_limit_with_content_length(gateway: RunningGateway) -> None:
    headers = {"content-type": JSON, "accept": JSON}
    response = await gateway.client.post("/graphql", content=padded_payload(MIB), headers=headers)
    assert response.status_code == 200, response.text[:200]
    assert response.json() == {"data": {"__typename": "Query"}}

    response = await gateway.client.post(
        "/graphql", content=padded_payload(MIB + 1), headers=headers
    )
    assert response.status_code == 413
    assert response.request.headers["content-length"] == str(MIB + 1)


async def test_body_limit_without_content_length(gateway: RunningGateway) -> None:
    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    headers = {"content-type": JSON, "accept": JSON}
    response = await gateway.client.post(
        "/graphql", content=chunks(padded_payload(2 * MIB)), headers=headers
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413

    # A streamed body within the limit is served.
    response = await gateway.client.post(
        "/graphql", content=chunks(padded_payload(MIB - 1)), headers=headers
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 200, response.text[:200]
    assert response.json() == {"data": {"__typename": "Query"}}


# --- health ------------------------------------------------------------------------------------


async def test_health_and_readiness(gateway: RunningGateway) -> None:
    healthz = await gateway.client.get("/healthz")
    assert healthz.status_code == 200
    readyz = await gateway.client.get("/readyz")
    assert readyz.status_code == 200
    assert readyz.json()["status"] == "ready"

    # Readiness follows the upstream sessions; liveness does not.
    for session in gateway.app.state.runtime.upstreams.sessions:
        await session.close()
    assert (await gateway.client.get("/readyz")).status_code == 503
    assert (await gateway.client.get("/healthz")).status_code == 200


# --- node(id:) ---------------------------------------------------------------------------------

LISTING_FIELDS = "id classifiedId legacyAd { userId adId } state legacy { adId }"


async def test_node_returns_the_same_listing(gateway: RunningGateway) -> None:
    listing = agency_listings(gateway)[1]
    refs = [
        ref_of(listing),
        {"classifiedId": listing.classified_id},
        {"legacy": {"userId": listing.user_id, "adId": listing.ad_id}},
    ]
    ids = set()
    for ref in refs:
        body = (
            await post(
                gateway,
                {
                    "query": f"query($ref: ListingRef!) {{ listing(ref: $ref) {{ {LISTING_FIELDS} }} }}",
                    "variables": {"ref": ref},
                },
                JSON,
            )
        ).json()
        assert "errors" not in body, body
        by_ref = body["data"]["listing"]
        body = (
            await post(
                gateway,
                {
                    "query": "query($id: ID!) { node(id: $id) { __typename id "
                    f"... on Listing {{ {LISTING_FIELDS} }} }} }}",
                    "variables": {"id": by_ref["id"]},
                },
                JSON,
            )
        ).json()
        assert "errors" not in body, body
        by_node = body["data"]["node"]
        assert by_node.pop("__typename") == "Listing"
        assert by_node == by_ref
        assert by_node["classifiedId"] == ref.get("classifiedId")
        legacy = ref.get("legacy")
        assert by_node["legacyAd"] == legacy
        assert (by_node["legacy"] or {}).get("adId") == (legacy or {}).get("adId")
        ids.add(by_ref["id"])
    assert len(ids) == len(refs), "each ref shape has its own id"


# --- `gateway schema --check` ----------------------------------------------------------------


def test_schema_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0 on the checked-in SDL; 1 on a stale copy or a missing file (`--path`)."""
    checked_in = ROOT / "schema" / "schema.graphql"
    assert checked_in.exists(), "run `uv run gateway schema --write` and commit the file"
    current = checked_in.read_text(encoding="utf-8")
    assert "type Listing implements Node" in current

    # In this process: starting Python again costs seconds (the installed `gateway`
    # script itself is run by the README tests).
    assert main(["schema", "--check", "--path", str(checked_in)]) == 0
    assert "is up to date" in capsys.readouterr().out

    def check(path: Path) -> int:
        args = build_parser().parse_args(["schema", "--check", "--path", str(path)])
        return int(args.run(args))

    stale = tmp_path / "schema.graphql"
    # What the file looked like before a field was added.
    stale.write_text(current.replace("  legacy: LegacyAd\n", "", 1), encoding="utf-8")
    assert stale.read_text(encoding="utf-8") != current
    assert check(stale) == 1
    assert "out of date" in capsys.readouterr().err
    assert check(tmp_path / "none.graphql") == 1
    # ... and the current text passes, so the refusals above are about the content.
    stale.write_text(current, encoding="utf-8")
    assert check(stale) == 0


async def test_websocket_messages_are_text_frames(gateway: RunningGateway) -> None:
    # Browser clients (graphql-ws) cannot read binary frames.
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init"}))
        ack = await socket.recv()
        assert isinstance(ack, str)
        assert json.loads(ack) == {"type": "connection_ack"}


async def test_graphql_before_the_app_has_started_is_503(simulator: Any) -> None:
    """The view is made by the lifespan; a request that comes before it is told to retry."""
    app = create_app(settings_for(simulator))
    transport = httpx.ASGITransport(app=app)  # runs no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post("/graphql", json={"query": "{ __typename }"})
        health = await client.get("/healthz")
    assert (response.status_code, health.status_code) == (503, 200)


async def test_other_methods_on_graphql_are_refused_as_before(gateway: RunningGateway) -> None:
    """`/graphql` over HTTP skips Starlette's router; a method it does not serve still gets
    Starlette's 405 with `Allow`, and is counted as a refused request."""
    for method in ("PUT", "DELETE", "PATCH"):
        response = await gateway.client.request(method, "/graphql", content=b"{}")
        assert response.status_code == 405, (method, response.text)
        assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    metrics = (await gateway.client.get("/metrics")).text
    refused = [
        line
        for line in metrics.splitlines()
        if line.startswith("gateway_requests_total") and 'outcome="rejected"' in line
    ]
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= 3, refused
