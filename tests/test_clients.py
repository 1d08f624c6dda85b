"""Widely used clients that no one here wrote, against the real gateway: relay-compiler on a
small Relay app's documents, Apollo Client (automatic persisted queries, `relayStylePagination`),
graphql-ws's own client, Python's `gql`, and `buf curl` through server reflection; and every
snippet of docs/clients.md.

The Node packages are pinned in `tests/clients/package-lock.json` (`npm ci --prefix
tests/clients`, as `.ci/run` does), `gql` in the uv dev group. Without Node or the installed
packages those tests are skipped with the command that installs them (failed in CI, which
installs both: see `system_parts.py`). One simulator and one gateway (HTTP and gRPC) serve the
whole module; relay-compiler runs once per test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from documents import DOCUMENTS, fenced_after, fenced_blocks
from graphql import GraphQLError, GraphQLNonNull, GraphQLObjectType, build_schema
from system_parts import missing

from gateway.live.bus import LocalEventBus
from gateway.process.demo import demo_refs
from gateway.simulator import Simulator

from gateway_harness import LOOPBACK_TLS, RunningGateway, run_gateway

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients"
NODE_MODULES = CLIENTS / "node_modules"
SCHEMA = ROOT / "schema" / "schema.graphql"
NPM_CI = "npm ci --prefix tests/clients"
SHOWN_HTTP = "http://127.0.0.1:8000"
SHOWN_GRPC = "127.0.0.1:50051"
PROTO_NAME = "listing_status.proto"

pytestmark = pytest.mark.asyncio(loop_scope="module")


def node_package(package: str) -> str:
    """Node's path, with `package` installed under tests/clients; else skip (fail in CI)."""
    node = shutil.which("node")
    if node is None:
        missing("node", f"apt-get install nodejs npm, then {NPM_CI}")
    if not (NODE_MODULES / package / "package.json").is_file():
        missing(f"{package} (npm)", NPM_CI)
    return node


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway() -> AsyncIterator[RunningGateway]:
    """The demo's data behind one gateway, HTTP and gRPC, subscribed to V3's webhooks."""
    async with (
        Simulator(seed=7).serve() as running,
        run_gateway(running, public=True, webhook_subscribe=True, grpc=True) as gateway,
    ):
        yield gateway


async def run(*args: str, cwd: Path | None = None) -> str:
    """A program's standard output; it must exit 0."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    assert process.returncode == 0, f"{args[:2]} failed:\n{err.decode()}\n{out.decode()}"
    return out.decode()


def demo_listing(gateway: RunningGateway) -> tuple[str, int, int]:
    return demo_refs(gateway.sim.data)[0]


def history_ids(gateway: RunningGateway, classified_id: str) -> int:
    record = gateway.sim.state.classified(classified_id)
    assert record is not None
    return len(record.statuses)


# --- Relay -------------------------------------------------------------------------------

RELAY_APP = CLIENTS / "relay"
# An operation's name and text in a generated artifact (its `params`).
GENERATED_OPERATION = re.compile(
    r'"name": "(\w+)",\s*"operationKind": "query",\s*"text": ("(?:[^"\\]|\\.)*")'
)


@pytest.fixture(scope="session")
def relay_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """relay-compiler on a copy of the Relay app (its schema path made absolute): the text of
    every operation it generated, by name. Compiled once per test process."""
    node = node_package("relay-compiler")
    app = tmp_path_factory.mktemp("relay-app")
    shutil.copytree(RELAY_APP / "src", app / "src")
    config = json.loads((RELAY_APP / "relay.config.json").read_text(encoding="utf-8"))
    assert (RELAY_APP / config["schema"]).resolve() == SCHEMA
    (app / "relay.config.json").write_text(json.dumps(config | {"schema": str(SCHEMA)}))
    compiler = str(NODE_MODULES / "relay-compiler" / "cli.js")
    result = subprocess.run(
        [node, compiler], cwd=app, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"relay-compiler refused the app:\n{result.stdout}{result.stderr}"
    )
    operations = {}
    for artifact in (app / "src" / "__generated__").glob("*.graphql.js"):
        found = GENERATED_OPERATION.search(artifact.read_text(encoding="utf-8"))
        if found:
            operations[found.group(1)] = json.loads(found.group(2))
    return operations


async def test_relay_compiler_accepts_the_apps_documents(relay_artifacts: dict[str, str]) -> None:
    """A board query, a @refetchable Listing fragment (refetched through `node(id:)`), and the
    status history as a @connection paged by a @refetchable fragment."""
    assert set(relay_artifacts) == {
        "BoardQuery",
        "ListingRowRefetchQuery",
        "StatusHistoryPaginationQuery",
    }
    assert "node(id: $id)" in relay_artifacts["ListingRowRefetchQuery"]
    assert "pageInfo" in relay_artifacts["StatusHistoryPaginationQuery"]


async def test_page_info_is_the_relay_connection_specs() -> None:
    """What the Relay cursor connections spec asks of PageInfo, read from the SDL."""
    page_info = build_schema(SCHEMA.read_text(encoding="utf-8")).type_map["PageInfo"]
    assert isinstance(page_info, GraphQLObjectType)
    fields = {name: str(field.type) for name, field in page_info.fields.items()}
    assert fields == {
        "hasNextPage": "Boolean!",
        "hasPreviousPage": "Boolean!",
        "startCursor": "String",
        "endCursor": "String",
    }
    assert not isinstance(page_info.fields["startCursor"].type, GraphQLNonNull)


async def test_relays_generated_operations_run_against_the_gateway(
    relay_artifacts: dict[str, str], gateway: RunningGateway
) -> None:
    """What relay-compiler generated, sent as Relay's network layer sends it: the board, one
    row refetched by its node id, and the history paged to its end by the connection."""

    async def post(name: str, variables: dict[str, Any]) -> dict[str, Any]:
        body = await gateway.query(relay_artifacts[name], variables)
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    refs = [
        {"classifiedId": cid, "legacy": {"userId": user, "adId": ad}}
        for cid, user, ad in demo_refs(gateway.sim.data)
    ]
    board = await post("BoardQuery", {"refs": refs})
    assert len(board["listings"]) == len(refs)
    first = board["listings"][0]
    row = await post("ListingRowRefetchQuery", {"id": first["id"]})
    assert row["node"]["id"] == first["id"] and row["node"]["state"] == first["state"]

    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await post(
            "StatusHistoryPaginationQuery", {"id": first["id"], "count": 7, "cursor": cursor}
        )
        connection = page["node"]["classified"]["statuses"]
        seen += [edge["node"]["id"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        cursor = connection["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == history_ids(gateway, refs[0]["classifiedId"])


# --- Apollo Client -----------------------------------------------------------------------


async def test_apollo_client_persists_queries_and_pages_a_whole_history(
    gateway: RunningGateway,
) -> None:
    node = node_package("@apollo/client")
    classified_id = demo_listing(gateway)[0]
    total = history_ids(gateway, classified_id)
    page_size = max(1, math.ceil(total / 4))
    out = await run(
        node,
        str(CLIENTS / "apollo.mjs"),
        f"{gateway.url}/graphql",
        classified_id,
        gateway.sim.data.tenant_of(classified_id),
        str(page_size),
    )
    answer = json.loads(out)
    requests = answer["requests"]
    # The hash alone first; the document once, after PERSISTED_QUERY_NOT_FOUND; then hashes.
    assert [r["document"] for r in requests] == [False, True] + [False] * (len(requests) - 2)
    assert requests[0]["codes"] == ["PERSISTED_QUERY_NOT_FOUND"]
    assert len({r["hash"] for r in requests}) == 1
    assert all(r["codes"] == [] and r["status"] == 200 for r in requests[1:])
    # fetchMore page by page, each page merged into one list by relayStylePagination.
    assert len(requests) - 1 == math.ceil(total / page_size)
    assert len(answer["ids"]) == len(set(answer["ids"])) == total
    assert answer["pageInfo"]["hasNextPage"] is False
    assert answer["pageInfo"]["hasPreviousPage"] is False  # the merged list starts at the top


# --- graphql-ws ------------------------------------------------------------------------------


def bus_of(gateway: RunningGateway) -> LocalEventBus:
    bus = gateway.app.state.runtime.events
    assert isinstance(bus, LocalEventBus)
    return bus


async def until(condition: Any) -> None:
    """Neither WebSocket protocol acknowledges a subscription: the bus is the only witness."""
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def append_status(gateway: RunningGateway, classified_id: str, status: str) -> None:
    """A new status upstream, through the simulator's control route (it posts the webhook)."""
    async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
        response = await client.post(
            f"{gateway.running_sim.control_url}/classifieds/{classified_id}/statuses",
            json={"status": status},
        )
    response.raise_for_status()
    assert [d["status"] for d in response.json()["deliveries"]] == [201]


async def test_graphql_ws_client_receives_a_subscription_event(gateway: RunningGateway) -> None:
    node = node_package("graphql-ws")
    node_package("ws")
    classified_id = demo_listing(gateway)[0]
    before = len(bus_of(gateway).subscribers)
    ws_url = gateway.url.replace("http://", "ws://") + "/graphql"
    client = asyncio.create_task(run(node, str(CLIENTS / "subscribe.mjs"), ws_url, classified_id))
    try:
        await until(lambda: len(bus_of(gateway).subscribers) > before or client.done())
        await append_status(gateway, classified_id, "UPDATING")
        async with asyncio.timeout(30):
            out = await client
    finally:
        client.cancel()
    event = json.loads(out)["data"]["classifiedStatusChanged"]
    assert event["classifiedId"] == classified_id
    assert event["status"]["status"] == "UPDATING"
    # The listing as it now stands: V3's portals moved to PROCESSING, the legacy ones did not.
    assert "PROCESSING" in {portal["state"] for portal in event["listing"]["portals"]}


# --- Python: gql ---------------------------------------------------------------------------


async def test_gql_validates_against_the_introspected_schema(gateway: RunningGateway) -> None:
    from gql import Client, gql
    from gql.transport.aiohttp import AIOHTTPTransport

    transport = AIOHTTPTransport(url=f"{gateway.url}/graphql")
    async with Client(transport=transport, fetch_schema_from_transport=True) as session:
        assert session.client.schema is not None
        assert "PageInfo" in session.client.schema.type_map
        with pytest.raises(GraphQLError, match="Cannot query field 'status' on type 'Listing'"):
            await session.execute(gql('{ listing(ref: {classifiedId: "x"}) { status } }'))


async def test_the_guides_gql_client(gateway: RunningGateway) -> None:
    """docs/clients.md's gql program, as shown but for the address."""
    code = fenced_after("so a mistyped field fails in the client, not on the wire:", "python")
    out = await run(sys.executable, "-c", code.replace(SHOWN_HTTP, gateway.url), cwd=ROOT)
    assert out.strip() in {"ONLINE", "PROCESSING", "PENDING", "FAILED", "DELETED", "OFFLINE"}


# --- gRPC: buf curl and generated stubs -----------------------------------------------------


async def test_buf_curl_calls_get_listing_and_health_through_reflection(
    gateway: RunningGateway,
) -> None:
    """docs/clients.md's `buf curl` commands, as shown but for the address."""
    node_package("@bufbuild/buf")
    block = fenced_after("the health service answers the same way:", "sh")
    outputs = []
    for line in block.splitlines():
        words = shlex.split(line.replace(SHOWN_GRPC, gateway.grpc_address))
        assert words[:2] == ["buf", "curl"]
        outputs.append(json.loads(await run(str(NODE_MODULES / ".bin" / "buf"), *words[1:])))
    listing, health = outputs
    classified_id = demo_listing(gateway)[0]
    assert listing["ref"] == {"classifiedId": classified_id}
    assert listing["state"].startswith("PUBLICATION_STATE_")
    assert {portal["provider"] for portal in listing["portals"]} == {"PROVIDER_CLASSIFIEDS_V3"}
    assert health == {"status": "SERVING"}


async def test_stubs_generated_from_the_proto_call_the_gateway(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """docs/clients.md's protoc commands, run in a folder of their own, then its client."""
    (tmp_path / "schema").mkdir()
    shutil.copyfile(ROOT / "schema" / "listing_status.proto", tmp_path / "schema" / PROTO_NAME)
    for line in fenced_after("reads the same file):", "sh").splitlines():
        words = shlex.split(line)
        if words[:3] == ["uv", "run", "python"]:
            words = [sys.executable, *words[3:]]
        await run(*words, cwd=tmp_path)
    code = fenced_after("from the `stubs` folder:", "python")
    out = await run(
        sys.executable, "-c", code.replace(SHOWN_GRPC, gateway.grpc_address), cwd=tmp_path / "stubs"
    )
    assert out.strip().startswith("PUBLICATION_STATE_")
    assert out.strip() != "PUBLICATION_STATE_UNSPECIFIED"


# --- docs/clients.md ---------------------------------------------------------------------------

# The guide's JavaScript and configuration, by the words before each: each is a verbatim part
# of a program above (the Relay app, apollo.mjs, subscribe.mjs), so the tests run what it shows.
SHOWN_IN_PROGRAMS = {
    "and a status history) is configured with:": "json",
    "so Relay refetches its next page through `node(id:)`:": "js",
    "merges the pages of a history into one list in the cache:": "js",
    "until `hasNextPage` is false:": "js",
    "taking the first event:": "js",
}


async def test_the_guides_javascript_is_the_code_the_tests_run() -> None:
    programs = [
        path.read_text(encoding="utf-8")
        for path in [
            CLIENTS / "apollo.mjs",
            CLIENTS / "subscribe.mjs",
            RELAY_APP / "relay.config.json",
            *sorted((RELAY_APP / "src").glob("*.js")),
        ]
    ]
    for marker, language in SHOWN_IN_PROGRAMS.items():
        block = fenced_after(marker, language)
        assert any(block in program for program in programs), f"not in a program: {marker!r}"
    shown = [
        content
        for _, language, content in fenced_blocks(DOCUMENTS["docs/clients.md"])
        if language in ("js", "json")
    ]
    assert sorted(shown) == sorted(fenced_after(m, lang) for m, lang in SHOWN_IN_PROGRAMS.items())
