"""`gateway serve` on SIGTERM: stops accepting, lets the in-flight request finish, exits 0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from gateway.simulator import (
    RunningSimulator,
)

from gateway_harness import LOOPBACK_TLS, read_until, serve_env

GATEWAY = str(Path(sys.executable).parent / "gateway")


async def test_sigterm_lets_a_slow_request_finish_then_exits_0(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = serve_env(simulator, GATEWAY_SHUTDOWN_GRACE_S="30")
    process = await asyncio.create_subprocess_exec(
        GATEWAY, "serve", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
    )
    assert process.stdout is not None
    listing = simulator.sim.data.listings[0]
    query = {
        "query": "query Slow($u: Int!, $a: Int!) { listing(ref: {legacy: {userId: $u, adId: $a}}) { state } }",
        "variables": {"u": listing.user_id, "a": listing.ad_id},
    }
    try:
        banner = await read_until(process.stdout, "Gateway listening")
        # Bound and listening before the banner: a connection waits in the backlog until
        # the app has started, so nothing is polled.
        url = re.search(r"(http://\S+)/graphql", banner)
        assert url is not None, banner
        async with httpx.AsyncClient(
            verify=LOOPBACK_TLS, base_url=url.group(1), timeout=30
        ) as client:
            simulator.sim.state.set_latency("legacy", 1000)
            slow = asyncio.create_task(client.post("/graphql", json=query))
            while simulator.sim.state.calls("legacy") == 0:  # noqa: ASYNC110 (no event to await)
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            answer = await slow
        assert answer.status_code == 200
        assert answer.json()["data"]["listing"]["state"] is not None
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        assert await process.wait() == 0, rest.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines = [json.loads(line) for line in rest.decode().splitlines() if line.startswith("{")]
    [request] = [line for line in lines if line.get("logger") == "gateway.access"]
    assert request["operation"] == "Slow"
    assert request["outcome"] == "ok"
    assert request["upstream_calls"] == 1
    assert len(request["trace_id"]) == 32
