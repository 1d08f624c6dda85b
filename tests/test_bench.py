"""The benchmark's own code, run small and in one process: its figures, ratios and outputs.

Speed is not asserted here (that is what the benchmark is for); the shape of what it
measures and writes is. `uv run python -m bench` runs the same code with each part in its
own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from bench.load import LocalLoad
from bench.processes import Gateway, Load, Meter, Simulator
from bench.report import markdown, results, write
from bench.run import Options, run
from gateway.app import create_app
from gateway.config import load_settings
from gateway.simulator import Simulator as UpstreamSimulator

from gateway_harness import serve_app

ROOT = Path(__file__).resolve().parent.parent


class InProcess:
    """The bench's `Launcher`, with every part served in the test's own process."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack

    async def simulator(self, latency_ms: float) -> Simulator:
        running = await self.stack.enter_async_context(
            UpstreamSimulator(seed=7, latency_ms=latency_ms).serve()
        )
        return Simulator(running.base_url, _nothing)

    async def gateway(self, name: str, sim: Simulator, settings: dict[str, str]) -> Gateway:
        values = {
            key.removeprefix("GATEWAY_").lower(): value
            for key, value in (sim.gateway_env() | settings).items()
        }
        serving = serve_app(create_app(load_settings(**values)))
        url = await serving.__aenter__()

        async def stop() -> None:
            await serving.__aexit__(None, None, None)

        return Gateway(f"{url}/graphql", 0.0, Meter(os.getpid()), stop)

    async def load(self, name: str) -> Load:
        return LocalLoad()


async def _nothing() -> None:
    pass


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def test_a_small_run_sets_the_gateway_beside_the_limit(
    stack: AsyncExitStack, tmp_path: Path
) -> None:
    options = Options(
        latency_ms=0, workloads=("W1",), modes=("limit", "warm"), concurrency=(1,),
        duration_s=0, requests=2, min_requests=2, warmup=1, first_request=("W1",),
        cached_pages=5, out=tmp_path,
    )  # fmt: skip
    progress: list[str] = []
    bench = await run(options, progress.append, InProcess(stack))
    data = results(bench, options, "uv run python -m bench --test")

    limit, warm = data["rows"]
    assert (limit["mode"], warm["mode"]) == ("limit", "warm")
    assert limit["requests"] == warm["requests"] == 2
    assert limit["errors"] == warm["errors"] == 0
    # The limit reads both upstreams each time; the warm gateway only legacy.
    assert limit["upstream_calls"] == {"v3": 1.0, "legacy": 1.0, "token": 0.0}
    assert warm["upstream_calls"] == {"v3": 0.0, "legacy": 1.0, "token": 0.0}
    assert warm["ratio"]["calls"] == 0.5
    assert warm["ratio"]["p50"] == pytest.approx(warm["p50_ms"] / limit["p50_ms"])
    assert warm["ratio"]["rps"] == pytest.approx(warm["rps"] / limit["rps"])
    assert limit["ratio"]["p50"] == 1.0
    assert len(progress) == 2 + 1 + 1  # two measurements, the first request, the memory

    (first,) = data["first_request"]
    assert first["errors"] == 0
    assert first["ratio"] == pytest.approx(first["first_ms"] / first["steady_p50_ms"])
    assert data["memory"]["cached_pages"] == 5
    assert (data["memory"]["v3_reads"], data["memory"]["v3_reads_when_repeated"]) == (5, 0)
    assert [t["target"] for t in data["targets"]] == [
        "first request W1 / its steady p50",
        "peak RSS MB with 5 cached pages",
    ]

    paths = write(data, tmp_path)
    assert json.loads(paths["json"].read_text())["rows"][1]["ratio"]["calls"] == 0.5
    table = paths["markdown"].read_text()
    assert table == markdown(data)
    header, rule, *lines = table.split("\n\n")[0].splitlines()
    assert "p50 x limit" in header and header.count("|") == rule.count("|")
    assert lines[0].startswith("| W1 | limit | 1 |")
    assert lines[1].startswith("| W1 | warm | 1 |")
    # The ratio columns are p50, p99, req/s and CPU (the calls ratio, 0.50x, is not one).
    cells = [cell.strip() for cell in lines[1].strip().strip("|").split("|")]
    assert cells[-4:] == [f"{warm['ratio'][k]:.2f}x" for k in ("p50", "p99", "rps", "cpu")]
    assert paths["chart"].read_bytes().startswith(b"\x89PNG")


def test_the_bench_command_lists_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in ("--quick", "--workloads", "--modes", "--concurrency", "--duration", "--out"):
        assert option in result.stdout


async def test_the_lean_load_reads_whole_answers_and_counts_what_failed() -> None:
    """`bench.rawhttp.ClosedLoop` (the workers benchmark's load) reads whole answers of any
    size from keep-alive connections, sends exactly the requests asked for, counts an HTTP
    error and a GraphQL error each as an error, and replaces a connection closed under it."""
    from aiohttp import web

    from bench.rawhttp import ClosedLoop

    answers = iter(
        [b"x" * 10, b"x" * 300_000, b'{"errors":[{"message":"no"}]}', b"", b"close"] + [b"ok"] * 10
    )
    peers: set[object] = set()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        assert body == b'{"q":1}'
        peers.add(request.transport)
        answer = next(answers)
        if answer == b"close":
            assert request.transport is not None
            request.transport.close()
        return web.Response(body=answer, status=200 if answer else 418)

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        load = ClosedLoop(
            f"http://127.0.0.1:{port}/echo",
            b'{"q":1}',
            connections=1,
            requests=8,
            duration_s=0.0,
            min_requests=8,
        )
        result = await load.run()
    finally:
        await runner.cleanup()
    assert len(result.latencies_ms) == 8
    # The GraphQL error, the 418 and the connection closed before its answer.
    assert result.errors == 3
    assert result.first_error == '[{"message":"no"}]'
    assert len(peers) == 2  # one connection until it was closed, then its replacement
    assert result.wall_s > 0


def test_the_cache_cold_targets_are_read_from_their_rows() -> None:
    from types import SimpleNamespace

    from bench.report import add_ratios, targets

    def row(mode: str, workload: str, p50: float, p95: float, cpu: float) -> dict[str, object]:
        return {
            "mode": mode, "workload": workload, "concurrency": 1, "p50_ms": p50, "p95_ms": p95,
            "p99_ms": p95, "rps": 1000 / p50, "calls_per_request": 1.0,
            "cpu_ms_per_request": cpu, "upstream_calls": {},
        }  # fmt: skip

    rows = [
        row("limit", "W50", 30, 33, 10), row("cache-cold", "W50", 36, 60, 25),
        row("limit", "W200", 80, 90, 50), row("cache-cold", "W200", 130, 140, 100),
    ]  # fmt: skip
    add_ratios(rows)
    found = {t["target"]: t for t in targets(SimpleNamespace(rows=rows, first=[], memory=None))}
    assert found["W50 cache-cold c=1 p50 / limit"]["value"] == pytest.approx(1.2)
    assert found["W50 cache-cold c=1 p95 / its p50"]["value"] == pytest.approx(60 / 36)
    assert not found["W50 cache-cold c=1 p95 / its p50"]["met"]
    assert found["W50 cache-cold c=1 gateway CPU / the limit client's"]["met"]  # 2.5x
    assert found["W200 cache-cold c=1 p50 / limit"]["value"] == pytest.approx(1.625)
    assert not found["W200 cache-cold c=1 p50 / limit"]["met"]
