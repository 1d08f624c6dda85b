"""Latency, gateway CPU and upstream calls per request for 1, 50 and 200 listings.

    uv run python bench/listings.py [--latency-ms 20] [--repeat 20]

Runs the upstream simulator and the gateway in two child processes on loopback and
queries the gateway over HTTP from this one, so the CPU figure is the gateway's own
(read from /proc). Each size is measured cold (first request, empty cache) and warm
(the same request repeated; V3 pages come from the cache, legacy is read every time),
then warm throughput with several concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import time
from typing import Any

import httpx

SIZES = (1, 50, 200)
TENANT = "agency-1"

QUERY = """query($refs: [ListingRef!]!) { listings(refs: $refs) {
  id state
  portals { portal provider state since message actionRequired }
  classified { latestStatus { id status subStatus date portals } }
  legacy { portals { portal publish { active online startDate remoteAdId } features { feature active } } }
} }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_simulator(port: int, latency_ms: float, extra: int) -> None:
    from gateway.simulator import Simulator

    async def main() -> None:
        sim = Simulator(seed=7, latency_ms=latency_ms)
        # Enough distinct classifieds of one tenant for the largest size: copies of real histories.
        source = sim.data.tenants[TENANT]
        for index in range(extra):
            record = sim.state.classified(source[index % len(source)])
            assert record is not None
            sim.state.put_classified(
                f"bench-{index:04d}", tenant=TENANT, items=[s.item for s in record.statuses]
            )
        async with sim.serve(port=port):
            await asyncio.Event().wait()

    asyncio.run(main())


def _run_gateway(port: int, sim_port: int) -> None:
    import uvicorn

    from gateway.demo import demo_settings
    from gateway.simulator.app import RunningSimulator
    from gateway.web import create_app

    running = RunningSimulator(sim=None, host="127.0.0.1", port=sim_port)  # type: ignore[arg-type]
    settings = demo_settings(running, http_port=port)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_ready(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(200):
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


async def _upstream_calls(client: httpx.AsyncClient, sim_url: str) -> dict[str, int]:
    counters: dict[str, dict[str, int]] = (await client.get(f"{sim_url}/_sim/counters")).json()
    return {upstream: sum(endpoints.values()) for upstream, endpoints in counters.items()}


async def measure(args: argparse.Namespace, gateway_pid: int, gw_url: str, sim_url: str) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        await _wait_ready(client, f"{gw_url}/healthz")
        await _wait_ready(client, f"{sim_url}/_sim/counters")
        catalog = (await client.get(f"{sim_url}/_sim/catalog")).json()
        classifieds = [entry["classifiedId"] for entry in catalog["tenants"][TENANT]]
        ads = [
            (int(user), ad) for user, user_ads in catalog["legacyUsers"].items() for ad in user_ads
        ]
        print(f"simulator latency {args.latency_ms} ms; {args.repeat} warm requests per size")
        print(
            f"{'listings':>8} {'phase':>5} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms/req':>11} {'V3/req':>7} {'legacy/req':>10} {'token/req':>9}"
        )
        throughputs: list[tuple[int, float]] = []
        for size in SIZES:
            refs: list[dict[str, Any]] = [
                {"classifiedId": classifieds[i], "legacy": {"userId": ads[i][0], "adId": ads[i][1]}}
                for i in range(size)
            ]
            body = {"query": QUERY, "variables": {"refs": refs}}
            for phase, count in (("cold", 1), ("warm", args.repeat)):
                await client.post(f"{sim_url}/_sim/counters/reset")
                cpu_before = _cpu_seconds(gateway_pid)
                latencies = []
                for _ in range(count):
                    started = time.perf_counter()
                    response = await client.post(f"{gw_url}/graphql", json=body)
                    latencies.append((time.perf_counter() - started) * 1000)
                    answer = response.json()
                    assert "errors" not in answer, answer["errors"][:2]
                    assert len(answer["data"]["listings"]) == size
                cpu_ms = (_cpu_seconds(gateway_pid) - cpu_before) * 1000 / count
                calls = await _upstream_calls(client, sim_url)
                p95 = statistics.quantiles(latencies, n=20)[18] if count >= 2 else latencies[0]
                print(
                    f"{size:>8} {phase:>5} {statistics.median(latencies):>8.1f} {p95:>8.1f} "
                    f"{cpu_ms:>11.1f} {calls.get('v3', 0) / count:>7.1f} "
                    f"{calls.get('legacy', 0) / count:>10.1f} {calls.get('token', 0) / count:>9.1f}"
                )
            throughputs.append((size, await _throughput(client, f"{gw_url}/graphql", body, args)))
        print(f"\nthroughput, {args.concurrency} concurrent clients, warm:")
        for size, per_second in throughputs:
            print(f"{size:>8} listings {per_second:>8.1f} requests/s")


async def _throughput(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], args: argparse.Namespace
) -> float:
    """Requests per second with `args.concurrency` clients sending `args.requests` in all."""
    remaining = args.requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await client.post(url, json=body)
            assert response.status_code == 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return args.requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=80, help="per size, for throughput")
    args = parser.parse_args()
    sim_port, gw_port = _free_port(), _free_port()
    context = multiprocessing.get_context("spawn")
    simulator = context.Process(
        target=_run_simulator, args=(sim_port, args.latency_ms, max(SIZES)), daemon=True
    )
    gateway = context.Process(target=_run_gateway, args=(gw_port, sim_port), daemon=True)
    simulator.start()
    gateway.start()
    try:
        assert gateway.pid is not None
        asyncio.run(
            measure(
                args, gateway.pid, f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{sim_port}"
            )
        )
    finally:
        for process in (gateway, simulator):
            process.terminate()
            process.join(5)


if __name__ == "__main__":
    main()
