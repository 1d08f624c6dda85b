"""The benchmark's Node gateway (`bench/node/server.mjs`) answers what the gateway answers.

`python -m bench.turns --against node` compares the gateway with it; the comparison means
something only if both do the same work, so the Node gateway's answer to the benchmark's
query (with histories, cursors, both upstreams' portals) must equal the gateway's, field
for field. Its packages are pinned in `bench/node/package-lock.json`; without them the test
is skipped with the command that installs them (and fails in CI).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from system_parts import missing

from bench.processes import NODE_GATEWAY, ProcessLauncher, Simulator
from bench.workloads import WORKLOADS, Listing
from gateway.app import create_app
from gateway.config import load_settings
from gateway.simulator import Simulator as UpstreamSimulator

from gateway_harness import serve_app

NPM_CI = "npm ci --prefix bench/node"


@pytest.fixture
def node_gateway_installed() -> None:
    if shutil.which("node") is None:
        missing("node", f"apt-get install nodejs npm, then {NPM_CI}")
    if not (NODE_GATEWAY.parent / "node_modules" / "@apollo" / "server").is_dir():
        missing("@apollo/server (npm)", NPM_CI)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _nothing() -> None:
    pass


async def _answer(http: aiohttp.ClientSession, url: str, body: bytes) -> Any:
    headers = {"content-type": "application/json"}
    async with http.post(url, data=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return json.loads(await response.read())


async def test_the_node_gateway_answers_the_benchmark_query_as_the_gateway_does(
    node_gateway_installed: None, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with UpstreamSimulator(seed=7).serve() as running:
        sim = Simulator(running.base_url, _nothing)
        listings: list[Listing] = await sim.add_listings(http, 50, 3)
        body = WORKLOADS["W50-history"].body(listings)
        settings = {key.removeprefix("GATEWAY_").lower(): v for key, v in sim.gateway_env().items()}
        async with serve_app(create_app(load_settings(**settings))) as base:
            ours = await _answer(http, f"{base}/graphql", body)
        node = await ProcessLauncher(tmp_path, http).node_gateway("node", sim)
        try:
            theirs = await _answer(http, node.url, body)
        finally:
            await node.stop()

    assert "errors" not in ours and "errors" not in theirs
    answered = ours["data"]["listings"]
    assert [listing["id"] for listing in answered] == [
        listing["id"] for listing in theirs["data"]["listings"]
    ]
    for mine, node_answer in zip(answered, theirs["data"]["listings"], strict=True):
        assert node_answer == mine, mine["id"]
    # Both upstreams' parts are there to compare, not nulls on both sides.
    providers = {p["provider"] for listing in answered for p in listing["portals"]}
    assert providers == {"CLASSIFIEDS_V3", "LEGACY"}
    assert all(listing["classified"]["statuses"]["nodes"] for listing in answered)
    assert all(listing["legacy"]["portals"] for listing in answered)
    assert any(p["since"] for listing in answered for p in listing["portals"])
