"""The README and docs/*.md stay true: their commands run and their queries answer as shown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
from documents import ALL, README, fenced_after
from grpc_health.v1 import health_pb2, health_pb2_grpc
from system_parts import require_program

from gateway.cli import main
from gateway.process.demo import demo_query
from gateway.simulator import RunningSimulator

from gateway_harness import LOOPBACK_TLS, RunningGateway, read_until, serve_env

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = str(Path(sys.executable).parent / "gateway")


def test_readme_leads_with_the_two_commands() -> None:
    top = README[: README.index("## ")]
    block = fenced_after("confined to the fields that needed it", "sh")
    assert block in top
    # `gateway demo` runs below as the installed script; `pytest` is this very suite.
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["uv run gateway demo", "uv run pytest"]


async def test_readme_query_and_answer_match_a_fresh_demo(gateway: RunningGateway) -> None:
    query = fenced_after("ready to paste", "graphql")
    assert query == demo_query(gateway.sim.data)
    shown = json.loads(fenced_after("<!-- demo-answer -->", "json"))
    body = await gateway.query(query)
    assert "errors" not in body
    assert body["data"]["listings"][0] == shown["data"]["listings"][0]


async def test_readme_curl_commands_against_the_simulator(simulator: RunningSimulator) -> None:
    require_program("curl", "apt-get install curl")  # skipped without it (failed in CI)
    script = fenced_after("can be seen with curl", "sh").replace(
        "http://127.0.0.1:8100", simulator.base_url
    )
    lines = [line for line in script.split("\n") if line.strip()]
    # Run the block as written, printing a separator after each command's output.
    commands = "\n".join(lines).replace("\\\n", "")
    program = "set -e\n" + "\n".join(
        f"{command}\necho; echo '=== end'" for command in commands.split("\n")
    )
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", program, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    outputs = [part.strip() for part in out.decode().split("=== end") if part.strip()]
    catalog, legacy, statuses = (json.loads(part) for part in outputs)  # TOKEN=… prints nothing
    assert "agency-1" in catalog["tenants"]
    assert legacy["result"] is True and legacy["data"][0]["portals"]
    assert len(statuses["items"]) == 2 and statuses["nextToken"]


def test_every_command_in_the_docs_exists(capsys: pytest.CaptureFixture[str]) -> None:
    shown = set(re.findall(r"`gateway (\w+)", ALL))
    assert shown == {"demo", "serve", "simulate", "schema", "proto"}
    # In this process: the installed script itself is run by the demo and simulate tests.
    for command in shown:
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert f"usage: gateway {command}" in capsys.readouterr().out


def test_serve_refuses_a_bad_setting_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [k for k in os.environ if k.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    for name, value in {"GATEWAY_V3_URL": "http://127.0.0.1:1/v3", "GATEWAY_LEGACY_URL": "http://127.0.0.1:1/rest/v1",
            "GATEWAY_LEGACY_API_KEY": "k", "GATEWAY_V3_AUTH": "static", "GATEWAY_V3_TOKEN": "t",
            "GATEWAY_HTTP_PORT": "not-a-port"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    assert main(["serve"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().count("\n") == 0
    assert "GATEWAY_HTTP_PORT" in stderr


async def test_demo_command_serves_the_printed_query_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        GATEWAY, "demo", "--port", "0", "--grpc-port", "0", "--move-every", "0",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        printed = await read_until(process.stdout, "Press Ctrl-C")
        url = re.search(r"GraphiQL: (http://127\.0\.0\.1:\d+/graphql)", printed)
        assert url is not None, printed
        query = printed[printed.index("query Demo") : printed.index("Press Ctrl-C")].strip() + "\n"
        async with httpx.AsyncClient(verify=LOOPBACK_TLS, timeout=30) as client:
            answer = (await client.post(url.group(1), json={"query": query})).json()
            page = await client.get(url.group(1), headers={"accept": "text/html"})
            board_url = re.search(r"status board: (http://127\.0\.0\.1:\d+/board)", printed)
            assert board_url is not None, printed
            board = await client.get(board_url.group(1))
        assert board.status_code == 200
        assert len(re.findall(r"[0-9a-f-]{36}\+\d+:\d+", board.text)) == 3
        assert "errors" not in answer
        assert len(answer["data"]["listings"]) == 3
        assert "graphiql" in page.text.lower()
        await _check_live_status(printed, url.group(1))
        grpc_address = re.search(r"gRPC: (127\.0\.0\.1:\d+)", printed)
        assert grpc_address is not None, printed
        async with grpc.aio.insecure_channel(grpc_address.group(1)) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="listing.v1.ListingStatusService")
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        await process.wait()
    assert process.returncode == 0, rest.decode()
    assert "unsubscribed from V3 status callbacks" in rest.decode()
    assert "Stopped." in rest.decode()


def _fits(value: Any, sample: Any) -> bool:
    """`value` has the keys and nesting of `sample` (data moves; nulls and empty lists may too)."""
    if isinstance(sample, dict):
        return (
            isinstance(value, dict)
            and value.keys() == sample.keys()
            and all(_fits(value[key], item) for key, item in sample.items())
        )
    if isinstance(sample, list):
        return isinstance(value, list) and all(_fits(item, sample[0]) for item in value)
    return not isinstance(value, dict | list)


async def _check_live_status(printed: str, graphql_url: str) -> None:
    """The documented subscription, printed by the demo, streams the simulator's moves."""
    shown = fenced_after("<!-- live-subscription -->", "graphql")
    sample = json.loads(fenced_after("<!-- live-event -->", "json"))
    assert shown in printed
    simulator = re.search(r"simulator: (http://\S+)", printed)
    assert simulator is not None, printed
    delivered: set[str] = set()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(graphql_url, protocols=("graphql-transport-ws",)) as ws,
    ):
        await ws.send_json({"type": "connection_init"})
        assert (await ws.receive_json())["type"] == "connection_ack"
        await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": shown}})
        while True:
            # As `curl -X POST <simulator>/_sim/move` does. The protocol does not acknowledge
            # a subscription, so move again until the first event arrives.
            async with session.post(f"{simulator.group(1)}/_sim/move") as moved:
                deliveries = (await moved.json())["deliveries"]
            assert {d["status"] for d in deliveries} <= {201}
            delivered |= {d["classifiedId"] for d in deliveries}
            if not delivered:
                continue  # this tick moved only other agencies' listings
            try:
                message = await ws.receive_json(timeout=0.5)
            except TimeoutError:
                continue
            break
    assert message["type"] == "next", message
    event = message["payload"]
    assert event["data"]["classifiedStatusChanged"]["classifiedId"] in delivered
    assert _fits(event, sample), event


async def test_simulate_command_serves_the_catalog(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        GATEWAY,
        "simulate",
        "--port",
        "0",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    try:
        printed = await read_until(process.stdout, "Press Ctrl-C")
        base = re.search(r"listening on (http://127\.0\.0\.1:\d+)", printed)
        assert base is not None, printed
        async with httpx.AsyncClient(verify=LOOPBACK_TLS) as client:
            catalog = (await client.get(f"{base.group(1)}/_sim/catalog")).json()
        assert catalog["listings"]
    finally:
        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        await process.wait()
    assert process.returncode == 0
    assert "Stopped." in rest.decode()


def test_demo_on_a_busy_port_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["demo", "--port", str(port)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"gateway demo: 127.0.0.1:{port} is in use; pick another with --port"
    )


async def test_serve_command_answers_from_the_configured_upstreams(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    env = serve_env(simulator)
    process = await asyncio.create_subprocess_exec(
        GATEWAY, "serve", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
    )
    assert process.stdout is not None
    listing = simulator.sim.data.listings[0]
    try:
        banner = await read_until(process.stdout, "Gateway listening")
        base = re.search(r"listening on (http://127\.0\.0\.1:\d+)/graphql", banner)
        assert base is not None, banner
        async with httpx.AsyncClient(
            verify=LOOPBACK_TLS, base_url=base.group(1), timeout=30
        ) as client:
            # Bound before the banner: the request waits for the app, nothing is polled.
            health = await client.get("/healthz")
            assert health.status_code == 200
            answer = await client.post(
                "/graphql",
                json={
                    "query": "query($u: Int!, $a: Int!) { listing(ref: {legacy: {userId: $u, adId: $a}}) { state } }",
                    "variables": {"u": listing.user_id, "a": listing.ad_id},
                },
            )
        assert answer.json()["data"]["listing"]["state"] is not None, answer.text
    finally:
        process.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        await process.wait()
    assert process.returncode == 0, rest.decode()
    assert "Traceback" not in rest.decode()


def test_executor_benchmark_prints_cpu_with_compilation_on_and_off() -> None:
    assert "uv run python bench/executor.py" in fenced_after("bench/executor.py` prints", "sh")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "executor.py"), "--listings", "3", "--repeat", "2"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"W3", "W3-history"}
    assert all(float(value.rstrip("x")) > 0 for row in rows.values() for value in row)
